"""``resume=RUN_DIR``: continue a run in its own folder, from its last checkpoint, with its config."""

from pathlib import Path

from omegaconf import OmegaConf

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.run_folder import resume_command

# What may differ from the run's own config when resuming: these change speed, display, or where
# the data is read from, not what the run computes.
MAY_CHANGE = (
    "resume", "trust_targets", "data_dir", "logger", "dataset.root", "dataset.allow_outside_root",
    "trainer.device", "trainer.distributed",
    "trainer.num_workers", "trainer.pin_memory", "trainer.progress", "trainer.log_every_steps",
    "trainer.checkpoint_every_steps", "evaluation.batch_size", "evaluation.backend",
)


def flatten(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return {key.rstrip("."): value for key, value in flat.items()}


def _shown(config: dict, key: str) -> str:
    return repr(config[key]) if key in config else "unset"


def resume_checkpoint(resume: str, run_dir: Path, config: dict, command: list[str] = ()) -> Path | None:
    """Check that Hydra put this run in the ``resume`` folder and that ``config`` (the composed
    config, unresolved) is the run's own; return its last checkpoint, or None when it never wrote
    one (the run then starts afresh in its folder). A key that only one of the two configs has (a
    setting added to dml_bench since the run was saved, at its default) is a change only when the
    ``command``'s overrides name it."""
    if Path(resume).resolve() != run_dir.resolve():
        raise UserError(f"resume={resume} continues one run in its own folder, but this job writes to "
                        f"{run_dir}: resume without -m (multirun) and without hydra.run.dir.")
    stored_file = run_dir / ".hydra" / "config.yaml"
    if not stored_file.is_file():
        raise UserError(f"resume={resume} is not a run folder: {stored_file} does not exist. Give the "
                        "folder of a run started by dml_bench.train, e.g. resume=outputs/2026-01-31/12-00-00.")
    stored = flatten(OmegaConf.to_container(OmegaConf.load(stored_file), resolve=False))
    current = flatten(config)
    named = [override.split("=", 1)[0].lstrip("+~") for override in command]

    def compared(key: str) -> bool:
        return (key in stored and key in current) or any(key == n or key.startswith(n + ".") for n in named)

    changed = sorted(key for key in stored.keys() | current.keys()
                     if stored.get(key) != current.get(key) and not key.startswith(MAY_CHANGE) and compared(key))
    if changed:
        overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        differences = "; ".join(f"{key} is {_shown(stored, key)} in the run and {_shown(current, key)} here"
                                for key in changed)
        settings = "a setting" if len(changed) == 1 else f"{len(changed)} settings"
        raise UserError(
            f"resume={resume} continues that run with the config it was started with, but this command "
            f"changes {settings}: {differences}. Give the run's own overrides again: "
            f"{resume_command(overrides, resume)}"
        )
    checkpoint = run_dir / "checkpoints" / "last.pt"
    return checkpoint if checkpoint.is_file() else None
