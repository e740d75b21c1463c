"""--verify's near-duplicate audit: resized, re-encoded and jittered copies planted in miniature
datasets are found across classes and across splits; look-alike glyphs rendered as separate
classes are found, and none once they are one visual class; distinct glyphs that still render as
near-duplicates are found, and none once the glyph data drops them."""

import io
from itertools import combinations

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from dml_bench.data.glyphs import characters, prepare_glyphs, render_glyphs
from dml_bench.data.prepare import near_duplicates
from dml_bench.data.prepare.near_duplicates import THRESHOLD, close_pairs
from dml_bench.data.prepare.verify import verify_images
from dml_bench.data.split_files import write_splits
from dml_bench.prepare_data import main


def photo(seed: int) -> Image.Image:
    """A smooth 96x72 colour picture, different for each seed (pHashes 20 bits apart or more)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((96, 72), Image.BICUBIC)


def jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    return Image.open(buffer)


def jittered(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image.rotate(1, resample=Image.BILINEAR)).enhance(1.1)


def write_folder(root):
    """train: p0 (class 0) and its half-size copy (class 1); p1 (class 2); p2 (class 3) and its
    jittered copy in the same class; p3 (class 4) and its jittered copy (class 5); p4 (class 6)
    and its lossless copy (class 7, an exact duplicate). test: p1's JPEG copy (class 10), p5 to
    p9 (classes 11 to 15). Distinct pictures, none near another."""
    images = {"p0.png": photo(0), "p0_half.png": photo(0).resize((48, 36), Image.BILINEAR),
              "p1.png": photo(1), "p1.jpg": jpeg(photo(1)), "p2.png": photo(2), "p2_jitter.png": jittered(photo(2)),
              "p3.png": photo(3), "p3_jitter.png": jittered(photo(3)), "p4.png": photo(4), "p4.bmp": photo(4),
              **{f"p{s}.png": photo(s) for s in range(5, 10)}}
    (root / "images").mkdir(parents=True)
    for name, image in images.items():
        image.save(root / "images" / name)
    train = ["p0.png", "p0_half.png", "p1.png", "p2.png", "p2_jitter.png", "p3.png", "p3_jitter.png", "p4.png",
             "p4.bmp"]
    write_splits(root, {"train": [(f"images/{n}", label) for n, label in zip(train, [0, 1, 2, 3, 3, 4, 5, 6, 7])],
                        "test": [(f"images/{n}", 10 + i) for i, n in enumerate(["p1.jpg", *(f"p{s}.png" for s in
                                                                                         range(5, 10))])]})


def pairs(found, kind):
    return sorted(tuple(sorted((near.a.path[7:], near.b.path[7:]))) for near in found[kind])


def test_planted_copies_are_found_across_classes_and_splits(tmp_path):
    write_folder(tmp_path)
    result = verify_images(tmp_path)
    assert pairs(result.near, "across classes") == [("p0.png", "p0_half.png"), ("p3.png", "p3_jitter.png")]
    assert pairs(result.near, "across splits") == [("p1.jpg", "p1.png")]
    assert all(near.distance <= THRESHOLD for kind in result.near for near in result.near[kind])
    # The exact duplicate is the exact audit's; the copy within a class is no one's concern.
    assert [[entry.path for entry in group] for group in result.duplicates["across classes"]] == [
        ["images/p4.png", "images/p4.bmp"]]
    assert verify_images(tmp_path, near_threshold=None).near is None  # exact audit only


def test_the_threshold_decides_how_far_a_copy_may_be(tmp_path):
    write_folder(tmp_path)
    jitter_distance = next(n.distance for n in verify_images(tmp_path).near["across classes"] if "jitter" in n.b.path)
    assert jitter_distance > 0
    closer = verify_images(tmp_path, near_threshold=jitter_distance - 1).near
    assert pairs(closer, "across classes") == [("p0.png", "p0_half.png")]


def test_close_pairs_match_a_brute_force_count_of_differing_bits(monkeypatch):
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64, endpoint=True)
    for i in range(0, 60, 3):  # plant near copies: a few bits flipped
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, size=i % 11, replace=False)))
    monkeypatch.setattr(near_duplicates, "_BLOCK", 1000)  # several blocks of rows
    for threshold in (0, 4, 8, 20):
        distances = ((i, j, bin(int(a) ^ int(b)).count("1")) for (i, a), (j, b) in combinations(enumerate(hashes), 2))
        expected = sorted(pair for pair in distances if pair[2] <= threshold)
        found = sorted(zip(*(part.tolist() for part in close_pairs(hashes, threshold))))
        assert found == expected
    assert len(expected) > 20  # the planted pairs, and a few chance ones at 20 bits


def glyph_folder(root, classes: list[str]):
    """Each string of ``classes`` one class: all the renderings of its characters, each class
    rendered on its own (so nothing is dropped for another class); the first half train, the
    second half test."""
    rendered = [render_glyphs(0, 32, 2, 1, chars=list(group))[0] for group in classes]
    return write_glyphs(root, np.concatenate(rendered), np.repeat(np.arange(len(classes)), [len(r) for r in rendered]))


def write_glyphs(root, images, labels):
    """A prepared folder of ``images`` under ``labels``: the first half of the classes train."""
    rows = {"train": [], "test": []}
    (root / "images").mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        path = f"images/{label}_{index}.png"
        Image.fromarray(image).save(root / path)
        rows["train" if label < (labels.max() + 1) // 2 else "test"].append((path, int(label)))
    write_splits(root, rows)
    return root


def found_classes(result, classes):
    return {frozenset(classes[near.a.label] + classes[near.b.label]) for kind in result.near
            for near in result.near[kind]}


# Look-alike sets (Latin, Greek, Cyrillic), and characters whose outlines differ from theirs and
# from each other: on 32-pixel glyphs jittered by up to 10 degrees, pHashes 8 bits apart also join
# distinct characters of similar outline (X and Ж, o and Ω, 7 and T; docs/datasets.md).
LOOK_ALIKES = ["AΑА", "MΜМ", "XΧХ", "oοо", "TΤТ"]
DISTINCT = ["ф", "g", "#", "Ψ", "λ", "%", "Щ", "&", "?", "ъ"]


def test_look_alike_glyphs_are_found_as_separate_classes_and_not_as_visual_classes(tmp_path):
    """Rendered the old way (one class per character), the audit names every pair of look-alike
    classes, and only those; with each look-alike set one class, as the glyph data now has it,
    it finds none."""
    separate = [c for group in LOOK_ALIKES for c in group] + DISTINCT
    found = found_classes(verify_images(glyph_folder(tmp_path / "separate", separate)), separate)
    assert found == {frozenset(a + b) for group in LOOK_ALIKES for a, b in combinations(group, 2)}
    visual = render_glyphs(0, 32, 2, 1, chars=separate)[2]
    assert visual == LOOK_ALIKES + DISTINCT
    result = verify_images(glyph_folder(tmp_path / "visual", visual))
    assert result.near == {"across classes": [], "across splits": []}


def test_the_command_line_lists_class_pairs_with_their_counts(tmp_path, capsys):
    write_folder(tmp_path)
    assert main(["csv", "--root", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"at most {THRESHOLD} bits apart" in out
    assert "across classes: 2 pairs of images, between 2 pairs of classes" in out
    assert "train class 0 ~ train class 1: 1 pairs, closest images/p0.png (train, class 0) ~ " \
           "images/p0_half.png (train, class 1), 0 bits apart" in out
    assert "across splits: 1 pairs of images, between 1 pairs of classes" in out
    assert main(["csv", "--root", str(tmp_path), "--verify", "--near-threshold", "64"]) == 1
    assert "from 0 to 63" in capsys.readouterr().err


# Distinct characters that scaled to fill the image and jittered still give near-duplicates:
# the small-capital cases, the thin strokes, the dashes.
STILL_NEAR = ["OΟО", "oοо", "CС", "cс", "l", "|", "IΙ", "!", "-", "_"]


def test_distinct_glyphs_that_still_render_near_lose_those_renderings_and_nothing_else(tmp_path):
    """Each class rendered on its own, the audit finds near-duplicates across these classes; the
    glyph data's rendering drops renderings until it finds none, and keeps every class."""
    assert verify_images(glyph_folder(tmp_path / "whole", STILL_NEAR)).near["across classes"]
    images, labels, classes = render_glyphs(0, 32, 2, 1, chars=[c for group in STILL_NEAR for c in group])
    assert classes == STILL_NEAR
    whole = sum(len(render_glyphs(0, 32, 2, 1, chars=list(group))[0]) for group in STILL_NEAR)
    assert 0.5 * whole < len(images) < whole  # a few renderings go, most stay
    result = verify_images(write_glyphs(tmp_path / "kept", images, labels))
    assert result.near == {"across classes": [], "across splits": []}


@pytest.mark.slow
def test_the_prepared_glyphs_have_no_near_duplicates_across_classes_or_splits(tmp_path):
    result = verify_images(prepare_glyphs(tmp_path / "glyphs"))
    assert result.near == {"across classes": [], "across splits": []}


@pytest.mark.slow
def test_on_all_the_glyphs_one_class_per_character_every_look_alike_pair_is_found(tmp_path):
    """The whole glyph data rendered the old way, one class per character: among the class pairs
    the audit reports are all the pairs of characters that the glyph data now joins."""
    chars = characters()
    found = found_classes(verify_images(glyph_folder(tmp_path, chars)), chars)
    visual = render_glyphs(0, 32, 2, 10)[2]
    alike = {frozenset(a + b) for group in visual for a, b in combinations(group, 2)}
    assert len(alike) == 44 and alike <= found
