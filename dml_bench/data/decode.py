"""Reading an image file as an RGB uint8 tensor, by the fastest decoder the file allows.

JPEG decoding is most of the data pipeline's cost, so two shortcuts are taken where they do not
change the result beyond resampling:

- reduced-size decoding: when the caller's first resize only needs ``min_size`` pixels, PIL's
  ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale, choosing the smallest scale whose
  output is still at least ``min_size`` (so the following resize never upsamples);
- an RGB or grayscale JPEG decoded at full size goes through ``torchvision.io.decode_jpeg``
  (libjpeg-turbo straight into a tensor, pixel-identical to PIL and about 25% faster).

Everything else (PNG, CMYK, palette, RGBA, ... and the reduced-size JPEGs) is decoded by PIL and
converted to RGB by ``to_rgb``: as ``Image.convert("RGB")`` does, except 16-bit grayscale, which
PIL's conversion clips at 255 (a 16-bit PNG would become nearly black and white): it is scaled
to 8 bits instead (value / 257, rounded).

A file that PIL refuses to decode as a decompression bomb (more than twice
``Image.MAX_IMAGE_PIXELS`` pixels) is one of ``DECODE_ERRORS`` like any broken file, so callers
name it.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

# Errors a decoder raises on a broken file (torchvision's decoders raise RuntimeError), or on a
# decompression bomb.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError)
# Modes of more than 8 bits per pixel that PIL opens 16-bit grayscale images in.
_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB, 16-bit grayscale scaled to 8 bits rather than clipped."""
    if image.mode in _WIDE_GRAY:
        values = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


def read_rgb(path: str | Path, min_size: tuple[int, int] | None = None) -> torch.Tensor:
    """The image at ``path`` as a (3, H, W) uint8 RGB tensor (memory in H, W, C order).

    ``min_size`` = (width, height) allows a JPEG to be decoded at reduced scale as long as both
    sides stay at least that large. Raises one of ``DECODE_ERRORS`` on an unreadable file.
    """
    with Image.open(path) as image:
        full_size = image.size
        if min_size is not None:
            image.draft("RGB", min_size)  # a no-op for non-JPEG files
        if image.format == "JPEG" and image.mode in ("RGB", "L") and image.size == full_size:
            return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
        image.load()
        return pil_to_tensor(to_rgb(image))
