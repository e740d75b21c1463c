"""Every config in configs/ composes, alone and on top of the quickstart experiment."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers.config import CONFIG_DIR, compose_config

GROUPS = ["dataset", "model", "loss", "miner", "sampler", "optimizer", "scheduler", "trainer", "protocol",
          "experiment"]
CHOICES = [(group, path.stem) for group in GROUPS for path in sorted((CONFIG_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), CHOICES, ids=[f"{g}={o}" for g, o in CHOICES])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    if group != "experiment":
        assert cfg[group] is not None
        assert OmegaConf.to_container(cfg[group], resolve=False) is not None
    cfg_on_quickstart = compose_config(["experiment=quickstart", f"{group}={option}"] if group != "experiment" else [])
    assert cfg_on_quickstart.trainer.epochs >= 1


def test_command_line_group_override_beats_the_experiment(tmp_path):
    cfg = compose_config(["experiment=quickstart", "dataset=csv", f"dataset.root={tmp_path}", "trainer.epochs=1"])
    assert cfg.dataset.name == "csv"
    assert cfg.dataset.root == str(tmp_path)
    assert cfg.trainer.epochs == 1
    assert cfg.optimizer.lr == 0.4  # what the experiment sets stays


def test_swapping_the_optimizer_on_top_of_the_experiment_builds():
    cfg = compose_config(["experiment=quickstart", "optimizer=adamw", "optimizer.lr=0.003"])
    param = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = instantiate(cfg.optimizer)([{"params": [param]}])
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 0.003


def test_quickstart_pins_the_embedded_recipe():
    cfg = compose_config(["experiment=quickstart"])
    assert cfg.dataset.name == "glyphs"
    assert cfg.loss._target_ == "dml_bench.losses.CrossEntropyLoss"
    assert cfg.sampler._target_ == "dml_bench.data.UniformSampler"
    assert cfg.scheduler._target_ == "dml_bench.engine.optim.WarmCosineLR"


@pytest.mark.parametrize("transform", ["train_transform", "test_transform"])
@pytest.mark.parametrize("dataset", sorted(p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml")))
def test_dataset_transforms_build(dataset, transform):
    cfg = compose_config([f"dataset={dataset}", "dataset.root=unused"])
    assert instantiate(cfg.dataset[transform]) is not None
