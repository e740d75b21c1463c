"""Near-duplicates: listed images whose perceptual hashes differ in at most a few bits.

Exact duplicates (``verify``) only catch copies that decode to the same pixels; a copy resized,
re-encoded as JPEG or slightly shifted, cropped or brightened decodes to other pixels. Each image
gets the 64-bit pHash of the ``imagehash`` library (a DCT of the 32x32 greyscale image, the 8x8
lowest frequencies compared with their median), and two images whose hashes differ in at most
``THRESHOLD`` bits are near-duplicates. Pairs listed in the same split under the same class are
left out (copies there cost no query anything), and so are exact duplicates, which ``verify``
reports already.

``THRESHOLD`` 8 of 64 bits: on photo-like test images a half-size copy, a JPEG copy at quality 60
or a brightness change move the hash by at most 6 bits, a 1-degree rotation or a 2 % crop by up to
10 to 12, while distinct images stay 14 or more bits apart (docs/datasets.md).
"""

from collections import Counter, defaultdict
from typing import NamedTuple

import imagehash
import numpy as np
from PIL import Image

THRESHOLD = 8
NEAR_KINDS = ("across classes", "across splits")
_BLOCK = 1 << 22  # hash pairs compared at once: 32 MB of XORs


class Near(NamedTuple):
    """Two listings (``verify.Listed``: split, path, label) whose images are near-duplicates."""

    a: tuple
    b: tuple
    distance: int


def perceptual_hash(image: Image.Image) -> int:
    """The image's 64-bit pHash as an integer."""
    return int(str(imagehash.phash(image)), 16)


def close_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every index pair i < j of ``hashes`` (uint64) within ``threshold`` bits, and its distance:
    all pairs compared, a block of rows at a time."""
    n, found = len(hashes), []
    rows = max(1, _BLOCK // max(n, 1))
    for start in range(0, n, rows):
        distance = np.bitwise_count(hashes[start:start + rows, None] ^ hashes[None, :])
        i, j = np.nonzero(distance <= threshold)
        keep = j > i + start
        found.append((i[keep] + start, j[keep], distance[i[keep], j[keep]]))
    if not found:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)
    return tuple(np.concatenate(parts) for parts in zip(*found))


def near_duplicates(listed: list, hashes: dict[str, int], content: dict[str, bytes],
                    threshold: int = THRESHOLD) -> dict[str, list[Near]]:
    """Each kind's pairs of listings: in one split under two classes, or in two splits.

    ``listed``: every listing (split, path, label); ``hashes`` and ``content`` map each decoded
    image's path to its perceptual hash and to the digest of its pixels."""
    paths = list(hashes)
    listings = defaultdict(list)
    for entry in listed:
        listings[entry.path].append(entry)
    found = {kind: [] for kind in NEAR_KINDS}
    for i, j, distance in zip(*close_pairs(np.array([hashes[p] for p in paths], np.uint64), threshold)):
        if content[paths[i]] == content[paths[j]]:
            continue  # an exact duplicate
        for a in listings[paths[i]]:
            for b in listings[paths[j]]:
                if a.split != b.split:
                    found["across splits"].append(Near(a, b, int(distance)))
                elif a.label != b.label:
                    found["across classes"].append(Near(a, b, int(distance)))
    return found


def class_pair(near: Near) -> tuple:
    """The two classes a near-duplicate pair joins, ((split, label), (split, label)) in order."""
    return tuple(sorted(((near.a.split, near.a.label), (near.b.split, near.b.label))))


def describe_near_duplicates(found: dict[str, list[Near]], threshold: int, examples: int = 10) -> list[str]:
    """Report lines: per kind, the number of image pairs and of class pairs, then the class pairs
    with the most near-duplicates, each with its count and its closest pair of images."""
    lines = [f"Near-duplicates (pHash of 64 bits at most {threshold} bits apart; exact duplicates not repeated):"]
    for kind, pairs in found.items():
        if not pairs:
            lines.append(f"  {kind}: none")
            continue
        counts = Counter(map(class_pair, pairs))
        lines.append(f"  {kind}: {len(pairs)} pairs of images, between {len(counts)} pairs of classes")
        closest = {}
        for near in sorted(pairs, key=lambda n: n.distance):
            closest.setdefault(class_pair(near), near)
        for (first, second), count in counts.most_common(examples):
            near = closest[first, second]
            lines.append(f"    {first[0]} class {first[1]} ~ {second[0]} class {second[1]}: {count} pairs, closest "
                         f"{_where(near.a)} ~ {_where(near.b)}, {near.distance} bits apart")
        if len(counts) > examples:
            lines.append(f"    ... and {len(counts) - examples} more pairs of classes")
    return lines


def _where(entry) -> str:
    return f"{entry.path} ({entry.split}, class {entry.label})"
