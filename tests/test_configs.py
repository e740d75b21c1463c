"""Every option of every config group builds into the objects of a run, as dml_bench.train builds
them (tests/helpers/build.py), on tiny prepared data; those objects take a training step and
evaluate. The fill-ins are what the training script or a small test run supplies: a tiny
``data_dir``, random weights, 16 px images (the dataset group keeps its own transforms, on a
smaller CNN), batches of 16, CPU. Each group's check asserts what its options are for."""

import os
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from dml_bench.builders import build_recorder, build_world
from dml_bench.data.split_files import read_split, split_file
from dml_bench.engine.optim import WarmCosineLR
from dml_bench.engine.recorders import RunFiles, TensorBoard
from dml_bench.evaluation.metric_names import MAP_AT_R, NUM_QUERIES, R_PRECISION, euclidean_key, recall_key
from dml_bench.runtime.distributed import World
from dml_bench.runtime.errors import UserError
from tests.helpers.build import build_run, train_step, write_tiny_data_dir
from tests.helpers.config import CONFIG_DIR, compose_config, config_options

BATCH = 16
FILL_INS = ["trainer.device=cpu", "trainer.num_workers=0", "trainer.progress=false", f"trainer.batch_size={BATCH}",
            "evaluation.batch_size=16"]
SMALL_IMAGES = ["dataset.train_transform.crop_size=16", "++dataset.train_transform.resize=18",
                "dataset.test_transform.crop_size=16", "++dataset.test_transform.resize=18"]
# What each group's options are composed with, besides FILL_INS: pairwise losses and miners get
# batches with several images per class, and miners a loss that takes their tuples.
GROUP_FILL_INS = {
    "dataset": ["model.backbone.widths=[4,8]", "model.embedding_size=16"],  # the recipes' 224 px crops
    # A classifier that is not zero-initialised: the first step's gradient reaches every parameter.
    "model": ["++model.pretrained=false", "++loss.zero_init=false", *SMALL_IMAGES],
    "loss": ["sampler=m_per_class", *SMALL_IMAGES],
    "miner": ["loss=triplet", "sampler=m_per_class", *SMALL_IMAGES],
    "sampler": SMALL_IMAGES,
    "optimizer": SMALL_IMAGES,
    "scheduler": SMALL_IMAGES,
    "trainer": SMALL_IMAGES,
    "protocol": SMALL_IMAGES,
    "experiment": ["++model.pretrained=false", *SMALL_IMAGES],
    "logger": SMALL_IMAGES,
    "search": SMALL_IMAGES,
}
# Per option: the ViT recipes' 9 (or 2) images per class become 4, for batches of 4 of the tiny
# data's 6 classes.
OPTION_FILL_INS = {("experiment", f"vit_{name}"): ["sampler.m=4"] for name in ("cub", "cars", "sop", "inshop")}
# timm's ResNets start each residual branch's last BatchNorm at zero (no gradient behind it at step 1).
OPTION_FILL_INS[("model", "timm")] = ["+model.backbone.zero_init_last=false"]
# The embedding each model config gives: its linear layer's, else the backbone's pooled feature.
EMBEDDING_SIZES = {"small_cnn": 128, "torchvision": 2048, "timm": 2048, "vit_small": 384, "resnet18": 512,
                   "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
# The parameters a model config keeps fixed: ViT-S's patch embedding, as Ermolov et al.
FROZEN = {"vit_small": {"backbone.net.patch_embed.proj.weight", "backbone.net.patch_embed.proj.bias"}}
CHOICES = [(group, option) for group in GROUP_FILL_INS for option in config_options(group)]
# The objects of a run and the config node each is instantiated from.
BUILT = {
    "dataset.train_transform": lambda run: run.datasets["train"].transform,
    "dataset.test_transform": lambda run: run.datasets["query"].transform,
    "sampler": lambda run: run.sampler,
    "model": lambda run: run.model,
    "model.backbone": lambda run: run.model.backbone,
    "loss": lambda run: run.loss,
    "miner": lambda run: run.miner,
    "optimizer": lambda run: run.optimizer,
    "scheduler": lambda run: run.scheduler,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data_dir(tmp_path_factory.mktemp("data"))


def test_every_config_group_is_built_here():
    groups = {path.name for path in CONFIG_DIR.iterdir() if path.is_dir()} - {"hydra"}  # hydra/: test_launchers
    assert groups == set(GROUP_FILL_INS)


@pytest.mark.parametrize(("group", "option"), CHOICES, ids=[f"{g}={o}" for g, o in CHOICES])
def test_every_option_builds_a_run_that_trains_a_step_and_evaluates(group, option, data_dir):
    overrides = [f"{group}={option}", f"data_dir={data_dir}", *FILL_INS, *GROUP_FILL_INS[group],
                 *OPTION_FILL_INS.get((group, option), [])]
    if (group, option) == ("dataset", "csv"):
        overrides.append(f"dataset.root={data_dir / 'csv'}")  # dataset=csv has no default root
    cfg = compose_config(overrides)
    torch.manual_seed(0)
    run = build_run(cfg)
    for key, built in BUILT.items():
        target = OmegaConf.select(cfg, f"{key}._target_")
        obj = built(run)
        assert obj is None if target is None else isinstance(obj, get_class(target)), key

    images, targets, _ = next(iter(run.train_loader))
    crop = cfg.dataset.train_transform.crop_size
    assert images.shape == (BATCH, 3, crop, crop) and images.dtype == torch.uint8
    before = [p.detach().clone() for group_ in run.optimizer.param_groups for p in group_["params"]]
    value, embeddings = train_step(run, images, targets)
    after = [p for group_ in run.optimizer.param_groups for p in group_["params"]]
    assert torch.isfinite(value)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the step moved no parameter"

    metrics = run.evaluator(run.model, torch.device("cpu")).metrics
    expected = {recall_key(k) for k in cfg.evaluation.recall_ks} | {MAP_AT_R, R_PRECISION, NUM_QUERIES}
    if cfg.evaluation.euclidean_recall:
        expected |= {euclidean_key(recall_key(k)) for k in cfg.evaluation.recall_ks}
    assert set(metrics) == expected and cfg.trainer.monitor in metrics
    evaluated = run.datasets["validation" if run.evaluator is not run.test_evaluator else "query"]
    assert metrics[NUM_QUERIES] == len(evaluated)
    assert all(0.0 <= metrics[name] <= 1.0 for name in expected - {NUM_QUERIES})
    CHECKS[group](option, cfg, run, images, targets, embeddings)


# The split each role reads: In-Shop searches its query images in a gallery, VehicleID its
# dataset.test_size set in itself (test_large by default), the others search the
# test split in itself.
SPLITS = {"inshop": {"train": "train", "query": "query", "gallery": "gallery"},
          "vehicleid": {"train": "train", "query": "test_large"}}
LEAVE_ONE_OUT = {"train": "train", "query": "test"}


def check_dataset(option, cfg, run, images, targets, embeddings):
    data = cfg.dataset
    splits = SPLITS.get(option, LEAVE_ONE_OUT)
    assert set(run.datasets) == set(splits)
    for role, split in splits.items():
        dataset = run.datasets[role]
        rows = read_split(split_file(data.root, split))
        assert (dataset.paths, dataset.labels) == ([row.path for row in rows], [row.label for row in rows]), role
        transform = data.train_transform if role == "train" else data.test_transform
        image, target, index = dataset[1]
        assert image.shape == (3, transform.crop_size, transform.crop_size) and image.dtype == torch.uint8, role
        assert (target, index) == (dataset.targets[1], 1)


def check_model(option, cfg, run, images, targets, embeddings):
    model = run.model
    size = EMBEDDING_SIZES[option]
    assert embeddings.shape == (BATCH, size) and model.embedding_size == size and torch.isfinite(embeddings).all()
    if option.startswith("resnet"):
        assert model.backbone.arch == option
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == FROZEN.get(option, set())
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any() for p in trained)


def check_loss(option, cfg, run, images, targets, embeddings):
    own = list(run.loss.parameters())
    groups = [g for g in run.optimizer.param_groups if g["name"].startswith("loss")]
    assert sum(len(g["params"]) for g in groups) == len(own)
    # initial_lr: the lr before the schedule's steps
    assert all(g.get("initial_lr", g["lr"]) == (run.param_lr or cfg.optimizer.lr) for g in groups)


def check_miner(option, cfg, run, images, targets, embeddings):
    if option == "none":
        assert run.miner is None
        return
    tuples = run.miner(run.model(images), targets)
    if len(tuples) == 3:  # anchor, positive, negative
        tuples = (tuples[0], tuples[1], tuples[0], tuples[2])
    a1, p, a2, n = tuples
    assert len(a1) > 0 and len(a2) > 0
    assert torch.equal(targets[a1], targets[p]) and not (a1 == p).any()
    assert (targets[a2] != targets[n]).all()


def check_sampler(option, cfg, run, images, targets, embeddings):
    batches = list(run.train_loader)
    assert len(batches) == len(run.datasets["train"]) // BATCH
    for _, batch_targets, _ in batches:
        assert len(batch_targets) == BATCH
        if option == "m_per_class":
            counts = torch.bincount(batch_targets)
            assert set(counts[counts > 0].tolist()) == {cfg.sampler.m}
    if option == "random":  # without replacement
        indices = torch.cat([batch[2] for batch in batches])
        assert len(set(indices.tolist())) == len(indices)


def check_optimizer(option, cfg, run, images, targets, embeddings):
    every = [p for module in (run.model, run.loss) for p in module.parameters()]
    grouped = [p for g in run.optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len(every) and {id(p) for p in grouped} == {id(p) for p in every}
    assert run.optimizer.defaults["lr"] == cfg.optimizer.lr
    for group in run.optimizer.param_groups:
        assert all(group["weight_decay"] == (cfg.optimizer.weight_decay if p.ndim > 1 else 0.0)
                   for p in group["params"])


def check_scheduler(option, cfg, run, images, targets, embeddings):
    lr = run.optimizer.param_groups[0]
    if option == "none":
        assert run.scheduler is None and lr["lr"] == cfg.optimizer.lr  # constant, after a step
    else:
        assert isinstance(run.scheduler, WarmCosineLR)
        assert lr["lr"] == pytest.approx(cfg.optimizer.lr * 2 / cfg.scheduler.warmup_iters)  # the second step's


def check_trainer(option, cfg, run, images, targets, embeddings):
    assert build_world(cfg) == World()
    two_ranks = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    if option == "ddp":  # two processes accepted, up to the batch check
        odd = OmegaConf.merge(cfg, {"trainer": {"batch_size": BATCH + 1}})
        with patch.dict(os.environ, two_ranks), pytest.raises(UserError, match="must split evenly"):
            build_world(odd)
    else:
        with patch.dict(os.environ, two_ranks), pytest.raises(UserError, match="add trainer=ddp"):
            build_world(cfg)


def check_protocol(option, cfg, run, images, targets, embeddings):
    if option == "paper":
        assert "validation" not in run.datasets and run.evaluator is run.test_evaluator
        return
    train, validation = run.datasets["train"], run.datasets["validation"]
    assert not set(train.classes) & set(validation.classes)
    classes = len(train.classes) + len(validation.classes)
    if option == "cross_validation":  # fold protocol.fold of protocol.folds, sizes within one class
        assert abs(len(validation.classes) - classes / cfg.protocol.folds) < 1
    else:
        assert len(validation.classes) == round(cfg.protocol.validation_fraction * classes)
    assert run.evaluator is not run.test_evaluator and cfg.trainer.monitor == MAP_AT_R


def check_experiment(option, cfg, run, images, targets, embeddings):
    """Its dataset is found under data_dir by its name, as the prepared datasets are laid out."""
    assert run.datasets["train"].root == Path(cfg.data_dir) / cfg.dataset.name


LOGGER_FILES = {"tensorboard": "tb/events.out.tfevents.*", "csv": "scalars.csv", "mlflow": "mlruns/*/*/metrics/*"}


def check_logger(option, cfg, run, images, targets, embeddings):
    """Its recorder, after RunFiles, records a scalar into its own file."""
    if option == "mlflow":
        pytest.importorskip("mlflow")
    run_dir = Path(cfg.data_dir) / "runs" / option
    recorder = build_recorder(cfg, run_dir, World(), run.datasets)
    assert type(recorder.recorders[0]) is RunFiles and len(recorder.recorders) == 2
    assert (type(recorder.recorders[1]) is TensorBoard) == (option == "tensorboard")
    recorder.open(None, [])
    recorder.scalars({"train/loss": 1.5}, 1)
    recorder.flush()
    recorder.close()
    assert list(run_dir.glob(LOGGER_FILES[option])), option


def check_search(option, cfg, run, images, targets, embeddings):
    """A search trains its loss under a validation protocol, its objective never a test metric."""
    assert cfg.search.name == option and option.replace("_", "") in type(run.loss).__name__.lower()
    assert run.evaluator is not run.test_evaluator and cfg.trainer.monitor == MAP_AT_R


CHECKS = {name.removeprefix("check_"): check for name, check in list(globals().items()) if name.startswith("check_")}


def test_every_group_has_its_check():
    assert set(CHECKS) == set(GROUP_FILL_INS)


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
