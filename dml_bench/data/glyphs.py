"""The embedded quickstart dataset: character glyphs rendered from the fonts matplotlib ships.

No download: every TrueType text font inside matplotlib renders each printable ASCII, Greek and
Cyrillic character twice with a small seeded jitter (offset, scale, rotation). A character is one
class; characters some fonts lack are skipped for those fonts (detected by comparing with the
font's rendering of a code point no font has), and characters with fewer than
``min_per_class`` renderings are dropped. The first half of the characters (by code point) train,
the second half test: a class-disjoint, CUB-sized zero-shot retrieval problem.

It is written once in the prepared format of every dataset (``dml_bench.data.split_files``:
``images/`` + ``splits/{train,test}.csv`` + the ``.prepared`` marker, which records the settings),
through the same writers as the benchmarks, so the same dataset class loads it as any benchmark.
"""

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dml_bench.data.split_files import MARKER, Marker, read_marker, split_file, write_marker, write_splits, write_text

NAME = "glyphs"
FORMAT_VERSION = 1
# Fonts of symbols or size variants, not text: their "glyphs" are not the characters.
_NON_TEXT_FONTS = ("LastResort", "STIXNonUni", "STIXSiz", "cmex", "cmsy")
_MISSING_CODE_POINT = "\ue000"  # private use area: absent from every matplotlib font


def characters() -> list[str]:
    ascii_printable = [chr(c) for c in range(0x21, 0x7F)]
    greek = [chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2]  # 0x3A2 is unassigned
    cyrillic = [chr(c) for c in range(0x410, 0x450)]
    return ascii_printable + greek + cyrillic


def text_fonts() -> list[Path]:
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [
        path
        for path in sorted(font_dir.glob("*.ttf"))
        if not any(path.name.startswith(prefix) for prefix in _NON_TEXT_FONTS)
    ]


def _render(font: ImageFont.FreeTypeFont, char: str, size: int, rng=None) -> np.ndarray:
    """White glyph on black, centred on its ink box; ``rng`` adds offset, scale and rotation."""
    canvas = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(canvas).text((size, size), char, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        return np.zeros((size, size), np.uint8)
    glyph = canvas.crop(box)
    scale, angle, shift = 1.0, 0.0, (0, 0)
    if rng is not None:
        scale = rng.uniform(0.8, 1.05)
        angle = rng.uniform(-10, 10)
        shift = tuple(int(s) for s in rng.integers(-2, 3, size=2))
    target = (size - 4) * scale / max(glyph.size)
    glyph = glyph.resize(
        (max(1, round(glyph.width * target)), max(1, round(glyph.height * target))),
        Image.BILINEAR,
    )
    glyph = glyph.rotate(angle, resample=Image.BILINEAR, expand=True)
    out = Image.new("L", (size, size), 0)
    out.paste(glyph, ((size - glyph.width) // 2 + shift[0], (size - glyph.height) // 2 + shift[1]))
    return np.asarray(out)


def render_glyphs(seed: int, image_size: int, renderings_per_font: int, min_per_class: int):
    """Return (images uint8 (N, S, S), class index per image, the characters of the classes)."""
    rng = np.random.default_rng(seed)
    font_size = image_size * 2 - 8
    per_char: dict[str, list[np.ndarray]] = {}
    chars = characters()
    for font_path in text_fonts():
        font = ImageFont.truetype(str(font_path), font_size)
        missing = _render(font, _MISSING_CODE_POINT, image_size)
        for char in chars:
            reference = _render(font, char, image_size)
            if not reference.any() or np.array_equal(reference, missing):
                continue
            per_char.setdefault(char, []).extend(
                _render(font, char, image_size, rng) for _ in range(renderings_per_font)
            )
    kept = [c for c in chars if len(per_char.get(c, ())) >= min_per_class]
    images = [img for c in kept for img in per_char[c]]
    labels = [index for index, c in enumerate(kept) for _ in per_char[c]]
    return np.stack(images), np.asarray(labels), kept


def prepare_glyphs(
    root: str | Path,
    seed: int = 0,
    image_size: int = 32,
    renderings_per_font: int = 2,
    min_per_class: int = 10,
) -> Path:
    """Write the glyph dataset under ``root`` unless it is already there with the same settings."""
    root = Path(root)
    settings = dict(
        version=FORMAT_VERSION,
        seed=seed,
        image_size=image_size,
        renderings_per_font=renderings_per_font,
        min_per_class=min_per_class,
    )
    splits = ("train", "test")
    if read_marker(root) == Marker(NAME, settings) and all(split_file(root, s).is_file() for s in splits):
        return root
    (root / MARKER).unlink(missing_ok=True)  # rendered again: not prepared until the new marker
    images, labels, kept = render_glyphs(seed, image_size, renderings_per_font, min_per_class)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    num_train_classes = len(kept) // 2
    rows = {split: [] for split in splits}
    for index, (image, label) in enumerate(zip(images, labels)):
        relative = f"images/{label:03d}/{index:05d}.png"
        (root / relative).parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(root / relative)
        rows["train" if label < num_train_classes else "test"].append((relative, int(label)))
    write_splits(root, rows)
    write_text(root / "classes.txt", "".join(f"{i} U+{ord(c):04X} {c}\n" for i, c in enumerate(kept)),
               encoding="utf-8")
    write_marker(root, NAME, settings)
    return root
