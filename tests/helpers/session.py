"""The folder a test session writes to, under pytest's basetemp (tests/conftest.py sets it at the
start of the session), and the glyph data the training tests share, prepared there once: runs
write under the session's temporary folders, never into the checkout."""

from pathlib import Path

from hydra.utils import instantiate

from tests.helpers.config import compose_config

# A smaller rendering of the embedded glyph data than the quickstart's (one rendering per font),
# set as overrides of configs/dataset/glyphs.yaml so that runs given them find it prepared.
GLYPHS_PREPARE = ["dataset.prepare.renderings_per_font=1", "dataset.prepare.min_per_class=5"]

_folder: Path | None = None
_glyphs: Path | None = None


def start(folder: Path) -> None:
    global _folder, _glyphs
    _folder, _glyphs = Path(folder), None


def folder() -> Path:
    if _folder is None:
        raise RuntimeError("no test session folder: run the tests with pytest (tests/conftest.py sets it)")
    return _folder


def glyphs_root() -> Path:
    """The shared glyph data, prepared on first use by the config's own ``dataset.prepare``."""
    global _glyphs
    if _glyphs is None:
        root = folder() / "glyphs"
        instantiate(compose_config(["dataset=glyphs", *GLYPHS_PREPARE]).dataset.prepare, root=str(root))
        _glyphs = root
    return _glyphs
