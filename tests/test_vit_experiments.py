"""experiment=vit_*: every value of Ermolov et al.'s ViT-S/16 recipe (docs/reference/vit_recipe.md),
written out here by hand from the official configs, checked in the composed config and in the
objects built from it."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dml_bench.builders import build_loss
from dml_bench.data import MPerClassSampler
from dml_bench.engine.optim import param_groups
from dml_bench.losses import ClassPairNCELoss
from dml_bench.models import VitSmall
from dml_bench.train import train
from tests.helpers.config import CONFIG_DIR, compose_config
from tests.helpers.miniature_datasets import prepare_miniature
from tests.helpers.runs import MINIATURE_RUN_OVERRIDES, exit_code, hydra_job

# Per dataset: config, training classes, images per class, batch, epochs (each class once per
# epoch), iterations they make, test Resize, Recall@K values, query/gallery splits.
RECIPES = {
    "vit_cub": {"dataset": "cub200", "classes": 100, "m": 9, "batch": 900, "epochs": 50, "iterations": 50,
                "resize": 256, "ks": [1, 2, 4, 8, 16, 32], "query": "test", "gallery": None},
    "vit_cars": {"dataset": "cars196", "classes": 98, "m": 9, "batch": 882, "epochs": 300, "iterations": 300,
                 "resize": 224, "ks": [1, 2, 4, 8, 16, 32], "query": "test", "gallery": None},
    "vit_sop": {"dataset": "sop", "classes": 11318, "m": 2, "batch": 900, "epochs": 200, "iterations": 5000,
                "resize": 224, "ks": [1, 10, 100, 1000], "query": "test", "gallery": None},
    "vit_inshop": {"dataset": "inshop", "classes": 3997, "m": 2, "batch": 900, "epochs": 400, "iterations": 3200,
                   "resize": 224, "ks": [1, 10, 20, 30, 40, 50], "query": "query", "gallery": "gallery"},
}
LEARNING_RATES = {"in21k": 3e-5, "dino": 1e-5, "deit": 3e-5}  # the official README's per weight set


def test_every_vit_experiment_is_checked_here():
    assert {p.stem for p in (CONFIG_DIR / "experiment").glob("vit_*.yaml")} == set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_composed_config_holds_the_recipe(name):
    r = RECIPES[name]
    cfg = compose_config([f"experiment={name}"])
    model = cfg.model
    assert model.backbone._target_ == "dml_bench.models.VitSmall" and model.backbone.weights_name == "in21k"
    assert model.backbone.freeze_patch_embed is True and model.backbone.img_size == 224
    assert (model.pretrained, model.weights, model.embedding_size, model.linear_init) == (True, None, 384, "orthogonal")
    assert model.l2_normalize is True and model.bn1d is False and model.mean is None and model.std is None
    assert cfg.loss._target_ == "dml_bench.losses.ClassPairNCELoss" and cfg.loss.temperature == 0.1
    assert cfg.miner._target_ is None
    assert (cfg.sampler._target_, cfg.sampler.m, cfg.sampler.per_epoch) == (
        "dml_bench.data.MPerClassSampler", r["m"], "classes")
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("torch.optim.AdamW", 3e-5, 0.01)
    assert cfg.scheduler._target_ is None
    trainer = cfg.trainer
    assert (trainer.batch_size, trainer.epochs, trainer.eval_every) == (r["batch"], r["epochs"], r["epochs"])
    assert (trainer.amp, trainer.grad_clip, trainer.monitor) == ("auto", 3.0, "recall@1")
    assert cfg.protocol.name == "paper"
    assert (list(cfg.evaluation.recall_ks), cfg.evaluation.distance) == (r["ks"], "cosine")
    data = cfg.dataset
    assert (data.name, data.query_split, data.gallery_split) == (r["dataset"], r["query"], r["gallery"])
    train, test = (OmegaConf.to_container(data[key]) for key in ("train_transform", "test_transform"))
    assert (train["crop_size"], train["resize"], train["color_jitter"], train["scale"]) == (224, None, None, [0.2, 1.0])
    assert train["ratio"] == pytest.approx([3 / 4, 4 / 3], abs=1e-6) and instantiate(data.train_transform).hflip
    assert (test["crop_size"], test["resize"]) == (224, r["resize"])


@pytest.mark.parametrize("weights_name", sorted(LEARNING_RATES))
def test_the_learning_rate_follows_the_weights_unless_set(weights_name):
    cfg = compose_config(["experiment=vit_cub", f"model.backbone.weights_name={weights_name}"])
    assert cfg.optimizer.lr == LEARNING_RATES[weights_name]
    cfg = compose_config(["experiment=vit_cub", f"model.backbone.weights_name={weights_name}", "optimizer.lr=2e-4"])
    assert cfg.optimizer.lr == 2e-4


@pytest.mark.parametrize("name", RECIPES)
def test_an_epoch_visits_every_class_once_as_the_official_sampler(name):
    """The official UniqueClassSampler's epoch: classes * m // batch batches."""
    r = RECIPES[name]
    cfg = compose_config([f"experiment={name}"])
    labels = [c for c in range(r["classes"]) for _ in range(2 + c % 3)]
    sampler = instantiate(cfg.sampler)(labels=labels, batch_size=cfg.trainer.batch_size, seed=0)
    assert isinstance(sampler, MPerClassSampler)
    assert sampler.num_batches * r["epochs"] == r["iterations"] == r["classes"] * r["m"] // r["batch"] * r["epochs"]


@pytest.mark.parametrize("name", RECIPES)
def test_built_model_loss_and_optimizer(name):
    """One block deep at 32 px (the rest as the recipe builds it): AdamW at the recipe's lr over
    every parameter but the patch embedding, decay on matrices only, the loss the recipe's."""
    cfg = compose_config([f"experiment={name}", "model.pretrained=false", "+model.backbone.depth=1",
                          "dataset.test_transform.crop_size=32"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    assert isinstance(model.backbone, VitSmall) and model.embedding_size == 384
    loss, param_lr = build_loss(cfg, RECIPES[name]["classes"], model.embedding_size)
    assert isinstance(loss, ClassPairNCELoss) and loss.temperature == 0.1 and param_lr is None
    optimizer = instantiate(cfg.optimizer)(param_groups(model, loss, cfg.optimizer.weight_decay, param_lr))
    assert isinstance(optimizer, torch.optim.AdamW)
    trained = [p for name_, p in model.named_parameters() if "patch_embed" not in name_]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trained)
    for group in optimizer.param_groups:
        assert group["lr"] == 3e-5 and group["betas"] == (0.9, 0.999)
        assert all(group["weight_decay"] == (0.01 if p.ndim > 1 else 0.0) for p in group["params"])


@pytest.mark.parametrize("name", RECIPES)
def test_cross_entropy_on_top_keeps_everything_else_equal(name):
    """The comparison the project is about: the recipe, its batches included, with the paper's
    cross-entropy instead; the classifier sized from the model's 384-d embedding."""
    recipe = OmegaConf.to_container(compose_config([f"experiment={name}"]))
    cfg = compose_config([f"experiment={name}", "loss=cross_entropy", "model.pretrained=false",
                          "+model.backbone.depth=1", "dataset.test_transform.crop_size=32"])
    swapped = OmegaConf.to_container(compose_config([f"experiment={name}", "loss=cross_entropy"]))
    assert {key for key in recipe if recipe[key] != swapped[key]} == {"loss"}
    loss, _ = build_loss(cfg, RECIPES[name]["classes"], instantiate(cfg.model).embedding_size)
    assert loss.classifier.weight.shape == (RECIPES[name]["classes"], 384)


def test_uniform_batches_on_top_as_docs_paper_md_types_them():
    cfg = compose_config(["experiment=vit_sop", "loss=cross_entropy", "sampler=random", "~sampler.m",
                          "~sampler.per_epoch"])
    sampler = instantiate(cfg.sampler)(labels=[c for c in range(500) for _ in range(4)], batch_size=900, seed=0)
    assert type(sampler).__name__ == "UniformSampler" and sampler.num_batches == 2000 // 900


def test_vit_cub_trains_on_a_prepared_miniature_cub(tmp_path):
    """The recipe end to end on CUB's own file layout (5 training classes of 4 images), shrunk:
    32 px crops, one block, 2 images of 2 classes per batch, so an epoch of every class once is
    5 * 2 // 4 = 2 batches."""
    root = prepare_miniature("cub200", tmp_path / "data", classes=(1, 2, 3, 4, 5, 101, 102), images_per_class=4)
    run = tmp_path / "run"
    with hydra_job(["experiment=vit_cub", f"dataset.root={root}", *MINIATURE_RUN_OVERRIDES, "model.pretrained=false",
                    "+model.backbone.depth=1", "sampler.m=2", "trainer.eval_every=1"], output_dir=run) as cfg:
        assert exit_code(train, cfg) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [0, 1] and math.isfinite(history[1]["train_loss"])
    card = json.loads((run / "run_info.json").read_text())["audit"]
    assert card["sampler"] == "MPerClassSampler(m=2, every class once per epoch)" and card["batches_per_epoch"] == 2
    assert card["frozen"].startswith("backbone.net.patch_embed.proj") and card["embedding_size"] == 384
