"""The optional pre-resized image cache (``dataset.cache=true``).

Built once by ``python -m dml_bench.prepare_data NAME --root DIR --cache [SIZE]``: every image
listed in ``DIR/splits/*.csv`` is stored as exactly what the recipe's first Resize makes of it
(torchvision's ``Resize`` on the RGB image) in ``DIR/cache/resize-SIZE/<path>.ppm``. PPM is
uncompressed and lossless, so it decodes several times faster than the original JPEG; the
transform's Resize then leaves the cached image as it is, so training sees the same augmentations.
It costs disk: about 200 KB per image at 256 x 256 (SOP: 24 GB).
"""

import hashlib
import logging
import os
import posixpath
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from torchvision import transforms as T

from dml_bench.data.benchmarks import find_benchmark
from dml_bench.data.decode import DECODE_ERRORS, to_rgb
from dml_bench.data.loaders import available_cpus
from dml_bench.data.split_files import inside_root, listed_images
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
COMPLETE = ".complete"
OUTSIDE = "_outside"  # the cached images of paths outside the dataset folder


def size_name(resize) -> str:
    """256 -> "256" (shorter side); (256, 256) -> "256x256" (height x width)."""
    return str(resize) if isinstance(resize, int) else "x".join(str(int(side)) for side in resize)


def parse_size(text: str):
    """The inverse of ``size_name``."""
    try:
        sides = [int(side) for side in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) <= 0:
        raise UserError(f"--cache {text}: give the Resize size as SIDE (shorter side, e.g. 256) or "
                        "HEIGHTxWIDTH (e.g. 256x256).")
    return sides[0] if len(sides) == 1 else tuple(sides)


def cache_resize(name: str, size: str):
    """The Resize to cache for ``--cache SIZE``; SIZE "recipe" is the benchmark recipe's own (its
    spec's ``recipe_resize``)."""
    if size != "recipe":
        return parse_size(size)
    spec = find_benchmark(name)
    if spec is None:
        raise UserError(f"--cache: {name} has no recipe of its own, so give the size your runs resize to "
                        "(dataset.train_transform.resize and dataset.test_transform.resize, 256 in "
                        "configs/dataset/csv.yaml): --cache 256 for the shorter side, or --cache 256x256.")
    if spec.recipe_resize is None:
        raise UserError(f"--cache: the {name} recipe has no Resize, so its images have nothing to "
                        "cache; give a size to cache another one (--cache 256 or --cache 256x256).")
    return spec.recipe_resize


def cache_dir(root: str | Path, resize) -> Path:
    return Path(root) / CACHE_DIR / f"resize-{size_name(resize)}"


def cached_file(folder: Path, path: str) -> Path:
    """Where the cache in ``folder`` keeps the image listed as ``path``: always inside ``folder``,
    an image listed outside the dataset folder (``dataset.allow_outside_root``) under a name
    derived from its path."""
    if inside_root(path):
        return folder / f"{posixpath.normpath(path)}.ppm"
    return folder / OUTSIDE / f"{hashlib.sha256(path.encode()).hexdigest()[:32]}-{posixpath.basename(path)}.ppm"


def open_cache(name: str, root: str | Path, resize) -> Path:
    """The cache folder of ``resize`` under ``root``, or a UserError telling how to build it."""
    folder = cache_dir(root, resize)
    if not (folder / COMPLETE).is_file():
        raise UserError(
            f"dataset.cache=true but the image cache {folder} is not built. Build it once with "
            f"`python -m dml_bench.prepare_data {name} --root {root} --cache {size_name(resize)}`, "
            "or train from the original images with dataset.cache=false."
        )
    return folder


def _resize_one(task) -> str | None:
    source, target, resize = task
    try:
        with Image.open(source) as image:
            resized = T.Resize(resize)(to_rgb(image))
    except DECODE_ERRORS as error:
        return f"{source}: {error}"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    resized.save(partial, format="PPM")
    os.replace(partial, target)
    return None


def build_cache(root: str | Path, resize, workers: int | None = None, allow_outside_root: bool = False) -> Path:
    """Write the cache of ``resize`` for every image of ``root``'s splits; resumes if interrupted."""
    root = Path(root)
    folder = cache_dir(root, resize)
    paths = listed_images(root, allow_outside_root)
    todo = [(root / p, cached_file(folder, p), resize) for p in paths if not cached_file(folder, p).is_file()]
    log.info("Caching %d of %d images resized to %s in %s", len(todo), len(paths), size_name(resize), folder)
    with ProcessPoolExecutor(workers or available_cpus()) as pool:
        errors = [e for e in progress_bar(pool.map(_resize_one, todo, chunksize=32), total=len(todo),
                                          desc="caching", unit=" images") if e]
    if errors:
        raise UserError(f"{len(errors)} images could not be decoded, e.g. {errors[0]}. Re-extract the "
                        "dataset (prepare_data --verify lists every unreadable image), then run --cache again.")
    (folder / COMPLETE).write_text(f"{len(paths)}\n")
    return folder
