"""Reading an image file as an RGB uint8 tensor, by the fastest decoder the file allows.

JPEG decoding is most of the data pipeline's cost, so two shortcuts are taken where they do not
change the result beyond resampling:

- reduced-size decoding: when the caller's first resize only needs ``min_size`` pixels, PIL's
  ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale, choosing the smallest scale whose
  output is still at least ``min_size`` (so the following resize never upsamples);
- an RGB or grayscale JPEG decoded at full size goes through ``torchvision.io.decode_jpeg``
  (libjpeg-turbo straight into a tensor, pixel-identical to PIL and about 25% faster).

Everything else (PNG, CMYK, palette, RGBA, ... and the reduced-size JPEGs) is decoded by PIL and
converted to RGB, exactly as ``Image.convert("RGB")`` always did.
"""

from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

# Errors a decoder raises on a broken file (torchvision's decoders raise RuntimeError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, RuntimeError)


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
        return pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
