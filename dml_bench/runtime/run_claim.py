"""One run per run folder, one training process per run.

- A new run never writes into a folder that holds another run's files (its checkpoints,
  history, metrics, loggers' files): ``check_new_run`` refuses it, before Hydra writes the
  folder's ``.hydra/`` (``RunFolderGuard``) and again where the run starts (a multirun's job).
- Runs started in the same second get distinct default folders: the timestamped folder is
  created with ``mkdir``, which one process alone can do, and the others take ``NAME-1``,
  ``NAME-2``... (``claim_new_folder``). The ranks of a torchrun launch share rank 0's. So do
  multiruns their default sweep folders.
- The process that trains or resumes in a run folder holds an exclusive ``flock`` on its
  ``.dml_bench.lock`` until it ends (released by the kernel if it is killed), and a second trainer
  gets an error naming the holder. Evaluating a checkpoint takes no lock: it writes only its
  own files, each atomically (``dml_bench.runtime.files``).

``fcntl.flock`` directly rather than the ``filelock`` package: the holder writes its pid into the
lock file for the error to name, and what a lock file of ``filelock`` holds is that package's own
business (it differs between its releases). ``flock`` locks are advisory and local to a machine's
kernel, or as reliable as the network file system's locking where run folders are shared.
"""

import fcntl
import os
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import remove_stale_temporaries
from dml_bench.runtime.run_folder import launcher_rank

LOCK_FILE = ".dml_bench.lock"
# What a run folder may hold before a new run starts in it: what Hydra writes before the run
# starts (its config and log), and the lock.
NOT_A_RUN = {".hydra", ".hydra-resume", "train.log", LOCK_FILE}
_held: dict[Path, int] = {}  # run folder -> descriptor of its locked file, in this process


def other_run_files(run_dir: Path) -> list[str]:
    """The entries of ``run_dir`` that another run wrote (none for a new or empty folder)."""
    if not run_dir.is_dir():
        return []
    return sorted(entry.name for entry in run_dir.iterdir()
                  if entry.name not in NOT_A_RUN and not entry.name.endswith(".tmp"))


def check_new_run(run_dir: Path) -> None:
    files = other_run_files(Path(run_dir))
    if files:
        shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        raise UserError(
            f"{run_dir} holds the files of another run ({shown}), and a new run never writes over them. "
            f"To continue that run, add resume={run_dir}; to start a new one, give another folder "
            "(hydra.run.dir=...) or leave hydra.run.dir out for a new timestamped one."
        )


def claim_new_folder(base: Path) -> Path:
    """Create and return ``base``, or ``base-1``, ``base-2``... if another process created it first."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(10_000):
        folder = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UserError(f"Could not create a new run folder beside {base}: 10000 names are taken; give hydra.run.dir=...")


def hold(run_dir: Path) -> None:
    """Lock ``run_dir`` for this process (again: nothing to do), or raise a UserError naming the
    process that holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise UserError(
            f"Another process (pid {holder}) is training in {run_dir}: one process at a time trains a run "
            "folder, else both would write its checkpoints and history. Wait for it to end (or stop it) "
            f"before resuming; evaluating its checkpoints meanwhile is fine "
            f"(python -m dml_bench.evaluate checkpoint={run_dir})."
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held[run_dir] = descriptor


def release(run_dir: Path) -> None:
    descriptor = _held.pop(Path(run_dir).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the last descriptor releases the flock


def start_in(run_dir: Path, resume: bool) -> None:
    """Where a training process starts (rank 0): lock the folder, refuse another run's files
    unless resuming, and delete the temporary files a killed process left there."""
    hold(run_dir)
    if not resume:
        check_new_run(run_dir)
    remove_stale_temporaries(run_dir)


def _share(folder: str | None) -> str | None:
    """Rank 0's ``folder``, on every rank of a torchrun launch (process group started by
    ``distributed.share_start_time``); ``folder`` itself in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return folder
    shared = [folder]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


class RunFolderGuard(Callback):
    """Before Hydra writes a single run's folder (configs/train.yaml registers it; ``claim: false``
    in configs/evaluate.yaml): the default timestamped folder is claimed, another folder checked
    and locked; before a multirun starts, its default timestamped sweep folder is claimed. Hydra
    turns a callback's exception into a warning, hence the exit."""

    def __init__(self, claim: bool = True):
        self.claim = claim

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """The sweep folder claimed where its name holds the start time (``dml_bench.now``, as the
        default's does); a fixed ``hydra.sweep.dir`` is left as it is: a search's workers share
        theirs. Hydra composes each job's config anew from the command's overrides, so the claimed
        folder becomes one of them."""
        if not self.claim or "dml_bench.now" not in str(OmegaConf.to_container(config.hydra.sweep,
                                                                                 resolve=False)["dir"]):
            return
        try:
            claimed = str(claim_new_folder(Path(OmegaConf.select(config, "hydra.sweep.dir"))))
        except UserError as error:
            print(f"\nError: {error}", file=sys.stderr)
            sys.exit(1)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = claimed
            # as typed: an interpolation such as hydra.sweep.subdir=${seed} is each job's to resolve
            given = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
            kept = [o.input_line for o in OverridesParser.create().parse_overrides(given)
                    if o.key_or_group != "hydra.sweep.dir"]
            claimed_override = f"hydra.sweep.dir={QuotedString(claimed, Quote.single).with_quotes()}"
            config.hydra.overrides.hydra = [*kept, claimed_override]

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not self.claim:
            return
        default = "dml_bench.run_dir" in str(OmegaConf.to_container(config.hydra.run, resolve=False)["dir"])
        resume = bool(config.get("resume"))
        run_dir = Path(OmegaConf.select(config, "hydra.run.dir"))
        claimed = None
        try:
            if launcher_rank() == 0:
                if default and not resume:
                    run_dir = claimed = claim_new_folder(run_dir)
                start_in(run_dir, resume)
        except UserError as error:
            print(f"\nError: {error}", file=sys.stderr)
            sys.exit(1)
        if default and not resume:
            claimed = _share(str(claimed) if claimed else None)
            if claimed is not None:  # None: a rank > 0 without a process group keeps the resolved name
                with read_write(config.hydra), open_dict(config.hydra):
                    config.hydra.run.dir = claimed
