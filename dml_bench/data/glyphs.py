"""The embedded quickstart dataset: character glyphs rendered from the fonts matplotlib ships.

No download: every TrueType text font inside matplotlib renders each printable ASCII, Greek and
Cyrillic character twice with a small seeded jitter (offset, scale, rotation). Characters some
fonts lack are skipped for those fonts (detected by comparing with the font's rendering of a code
point no font has).

A class is a visual class, not a code point: characters that render alike (Latin A, Greek Α and
Cyrillic А, say) are one class, since no image could tell them apart. Two characters render alike
when their renderings without jitter differ by at most ``SAME_TOLERANCE`` grey levels per pixel on
average in at least half of the fonts that have both; the classes are the connected groups of
such pairs. Scaled to fill the image and jittered, some renderings of distinct classes still come
out near-duplicates in the sense of the dataset audit (``dml_bench.data.prepare.near_duplicates``:
pHashes a few bits apart; o and O, l and |, - and _): such a picture cannot be told from the other
class's, so renderings are dropped until no two of different classes are near-duplicates. Classes
with fewer than ``min_per_class`` renderings are dropped. The first half of
the classes (ordered by their first code point) train, the second half test: a class-disjoint,
CUB-sized zero-shot retrieval problem in which no look-alike set straddles the split.

It is written once in the prepared format of every dataset (``dml_bench.data.split_files``:
``images/`` + ``splits/{train,test}.csv`` + the ``.prepared`` marker, which records the settings
and ``FORMAT_VERSION``), through the same writers as the benchmarks, so the same dataset class loads
it as any benchmark. ``classes.txt`` lists each class's code points.
"""

import json
import logging
import shutil
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dml_bench.data.prepare.near_duplicates import THRESHOLD, close_pairs, perceptual_hash
from dml_bench.data.split_files import (
    MARKER,
    SPLITS_DIR,
    Marker,
    read_marker,
    split_file,
    write_marker,
    write_splits,
    write_text,
)
from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)

NAME = "glyphs"
# 3: no near-duplicates across classes; 2: one class per visual class (1: one per code point,
# look-alikes split between train and test).
FORMAT_VERSION = 3
# Mean absolute difference, in grey levels of 255, under which two renderings count as the same.
# Measured at 32 px: the 44 look-alike pairs are the same from 0 to 4; at 8 a first false pair
# (Greek Alpha and Lambda) joins.
SAME_TOLERANCE = 1.0
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


def visual_classes(references: list[dict[str, np.ndarray]], chars: list[str]) -> list[str]:
    """Group ``chars`` into visual classes, each a string of characters in the order of ``chars``.

    ``references`` holds, per font, the jitter-free rendering of each character the font has. Two
    characters are joined when their renderings are the same (``SAME_TOLERANCE``) in at least half
    of the fonts that have both; a class is a connected group of joined characters (union-find).
    """
    parent = list(range(len(chars)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    same = np.zeros((len(chars), len(chars)), np.int32)
    both = np.zeros_like(same)
    for rendered in references:
        have = np.array([c in rendered for c in chars])
        index = np.flatnonzero(have)
        if not len(index):
            continue
        pixels = np.stack([rendered[chars[i]].reshape(-1).astype(np.float32) for i in index])
        difference = np.abs(pixels[:, None, :] - pixels[None, :, :]).mean(axis=-1)
        both[np.ix_(index, index)] += 1
        same[np.ix_(index, index)] += difference <= SAME_TOLERANCE
    for i, j in zip(*np.nonzero(np.triu(2 * same >= both, k=1) & (both > 0))):
        parent[root(j)] = root(i)
    groups: dict[int, str] = {}
    for i, char in enumerate(chars):
        groups[root(i)] = groups.get(root(i), "") + char
    return sorted(groups.values(), key=lambda group: chars.index(group[0]))


def without_near_duplicates(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mask of the renderings kept so that no two of different classes are near-duplicates
    (pHashes at most ``THRESHOLD`` bits apart, the audit's test). While such pairs remain, the
    rendering in the most of them goes (the first of those on a tie): few go, and the same ones
    for the same seed."""
    hashes = np.array([perceptual_hash(Image.fromarray(image)) for image in images], np.uint64)
    first, second, _ = close_pairs(hashes, THRESHOLD)
    across = labels[first] != labels[second]
    first, second = first[across], second[across]
    keep = np.ones(len(images), bool)
    while len(first):
        worst = np.bincount(np.concatenate([first, second]), minlength=len(images)).argmax()
        keep[worst] = False
        untouched = (first != worst) & (second != worst)
        first, second = first[untouched], second[untouched]
    return keep


def render_glyphs(seed: int, image_size: int, renderings_per_font: int, min_per_class: int,
                  chars: list[str] | None = None):
    """Return (images uint8 (N, S, S), class index per image, the characters of each class).

    ``chars`` (default: ``characters()``) are the characters rendered; the classes group them.
    """
    rng = np.random.default_rng(seed)
    font_size = image_size * 2 - 8
    chars = characters() if chars is None else list(chars)
    per_char: dict[str, list[np.ndarray]] = {}
    references = []
    for font_path in text_fonts():
        font = ImageFont.truetype(str(font_path), font_size)
        missing = _render(font, _MISSING_CODE_POINT, image_size)
        rendered = {}
        for char in chars:
            reference = _render(font, char, image_size)
            if not reference.any() or np.array_equal(reference, missing):
                continue
            rendered[char] = reference
            per_char.setdefault(char, []).extend(
                _render(font, char, image_size, rng) for _ in range(renderings_per_font)
            )
        references.append(rendered)
    classes = visual_classes(references, chars)
    images = np.stack([img for group in classes for c in group for img in per_char.get(c, ())])
    labels = np.asarray([index for index, group in enumerate(classes) for c in group for _ in per_char.get(c, ())])
    keep = without_near_duplicates(images, labels)
    images, labels = images[keep], labels[keep]
    kept = np.bincount(labels, minlength=len(classes)) >= min_per_class
    in_kept = kept[labels]
    new_label = np.cumsum(kept) - 1  # a kept class's index among the kept
    return images[in_kept], new_label[labels[in_kept]], [group for group, k in zip(classes, kept) if k]


def prepare_glyphs(
    root: str | Path,
    seed: int = 0,
    image_size: int = 32,
    renderings_per_font: int = 2,
    min_per_class: int = 10,
) -> Path:
    """Write the glyph dataset under ``root`` unless it is already there with the same settings
    and ``FORMAT_VERSION``; a folder of another version or other settings is rendered again."""
    root = Path(root)
    settings = dict(
        version=FORMAT_VERSION,
        seed=seed,
        image_size=image_size,
        renderings_per_font=renderings_per_font,
        min_per_class=min_per_class,
    )
    splits = ("train", "test")
    marker = read_marker(root)
    if marker == Marker(NAME, settings) and all(split_file(root, s).is_file() for s in splits):
        return root
    if marker is not None and not _glyph_marker(marker):
        raise UserError(f"{root} holds the prepared dataset {marker.name!r}, not the glyphs: point dataset.root "
                        "of dataset=glyphs at a folder of its own (data/glyphs by default).")
    log.info("rendering the %s data under %s (%s)", NAME, root,
             "first use" if marker is None else "the folder holds another version or other settings")
    if marker is not None:
        # Not prepared until the new marker; the earlier version's splits and images go too, so an
        # interrupted rendering never leaves old splits over new images, nor old images unlisted.
        (root / MARKER).unlink()
        for stale in (root / SPLITS_DIR).glob("*.csv"):
            stale.unlink()
        shutil.rmtree(root / "images", ignore_errors=True)
    images, labels, classes = render_glyphs(seed, image_size, renderings_per_font, min_per_class)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    num_train_classes = len(classes) // 2
    rows = {split: [] for split in splits}
    for index, (image, label) in enumerate(zip(images, labels)):
        relative = f"images/{label:03d}/{index:05d}.png"
        (root / relative).parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(root / relative)
        rows["train" if label < num_train_classes else "test"].append((relative, int(label)))
    write_splits(root, rows)
    write_text(root / "classes.txt", classes_text(classes), encoding="utf-8")
    write_marker(root, NAME, settings)
    return root


def _glyph_marker(marker: Marker) -> bool:
    """Whether a marker was written by this preparer: now, or as the single JSON line of settings
    the first version wrote."""
    if marker.name == NAME:
        return True
    try:
        return isinstance(json.loads(marker.name), dict)
    except ValueError:
        return False


def classes_text(classes: list[str]) -> str:
    """``classes.txt``: one line per class, its index, its code points and its characters,
    e.g. ``0 U+0021 !`` and ``32 U+0041 U+0391 U+0410 AΑА``."""
    return "".join(f"{index} {' '.join(f'U+{ord(c):04X}' for c in group)} {group}\n"
                   for index, group in enumerate(classes))
