"""Data that a run prepares itself (``dataset.prepare``: the embedded glyphs), prepared where it
is missing or was prepared with other settings, one process at a time."""

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

from dml_bench.data.split_files import preparing, read_marker, split_file

log = logging.getLogger(__name__)


def prepare_embedded(data: DictConfig) -> None:
    """Prepare ``data`` (a ``dataset`` config with ``prepare``) where it is missing, or where its
    marker says it was prepared (the preparer compares the settings the marker records with the
    run's, and prepares it again for others), under the folder's preparation lock. A folder of
    split files without a marker is the user's own and is used as it is."""
    if not data.get("prepare"):
        return
    with preparing(data.root):
        missing = not split_file(data.root, data.train_split).exists()
        if not missing and read_marker(data.root) is None:
            return
        if missing:
            log.info("preparing %s under %s", data.name, data.root)
        instantiate(data.prepare, root=data.root)
