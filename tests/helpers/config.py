"""The project root and the real config tree, composed as the entry points compose it."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from dml_bench.runtime import run_folder

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
run_folder.register()  # the entry points register these before composing configs/train.yaml; so do the tests


def compose_config(overrides=(), config_name: str = "train"):
    """The config ``python -m dml_bench.<config_name> OVERRIDES`` would run with (no ``hydra`` node)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)


def config_options(group: str) -> list[str]:
    """Every option of a config group, as typed on the command line (``paper/resnet50_ce``)."""
    folder = CONFIG_DIR / group
    return sorted(str(path.relative_to(folder).with_suffix("")) for path in folder.rglob("*.yaml"))
