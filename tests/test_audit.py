"""The run audit card: read from the objects a run built, printed at its start, kept in run_info.json."""

import csv
import json
import subprocess
from pathlib import Path

import torch
import torchvision
from omegaconf import OmegaConf

from dml_bench import builders
from dml_bench.engine.audit import audit_card, batchnorm_state, sha256
from dml_bench.models import Embedder, SmallConvNet, TorchvisionBackbone
from dml_bench.runtime.distributed import World
from tests.helpers.config import compose_config
from tests.helpers.runs import fast_overrides


def split_counts(split_file) -> tuple[int, int]:
    """(images, classes) listed in a split file."""
    with open(split_file, newline="") as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    return len(labels), len(set(labels))


def sha256sum(path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def test_the_card_of_a_pretrained_resnet_under_the_rigorous_protocol(tmp_path):
    weights = tmp_path / "my_resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    model = Embedder(TorchvisionBackbone("resnet18"), weights=str(weights), freeze_bn=True, embedding_size=64,
                     bn1d=True, l2_normalize=True).eval()
    cfg = compose_config(["experiment=quickstart", *fast_overrides(), "protocol=rigorous", "sampler=m_per_class",
                          "+dataset.train_transform.resize=40", "+dataset.test_transform.resize=[36,40]"])
    datasets = builders.build_datasets(cfg)
    loader = builders.build_train_loader(cfg, datasets["train"], torch.device("cpu"), World())

    card = audit_card(model, datasets, loader, world_size=1, amp_dtype=torch.bfloat16, protocol="rigorous",
                      monitor="map@r")

    assert not model.training  # the BatchNorm check leaves the model's mode as it was
    assert card["backbone"] == "TorchvisionBackbone(resnet18)" and card["backbone_features"] == 512
    assert card["weights"] == str(weights) and card["weights_sha256"] == sha256sum(weights)
    assert card["batchnorm"].startswith("frozen (20 BatchNorm2d")  # stem 1 + 8 blocks x 2 + 3 downsamples
    assert card["pooling"] == "global average" and card["frozen"] == "none"
    assert card["neck"] == "Linear(512->64) + BatchNorm1d(affine=False)"
    assert (card["embedding_size"], card["l2_normalize"]) == (64, True)
    assert card["train_images"] == {"crop": 32, "resize": 40}
    assert card["test_images"] == {"crop": 32, "resize": [36, 40]}
    train_images, train_classes = split_counts(f"{cfg.dataset.root}/splits/train.csv")
    splits = card["splits"]
    assert splits["train"]["images"] + splits["validation"]["images"] == train_images
    assert splits["train"]["classes"] + splits["validation"]["classes"] == train_classes
    assert splits["validation"]["classes"] == round(0.2 * train_classes)
    assert (splits["query"]["images"], splits["query"]["classes"]) == split_counts(
        f"{cfg.dataset.root}/splits/test.csv")
    assert card["sampler"] == "MPerClassSampler(m=4)"
    assert (card["batch_size"], card["batches_per_epoch"]) == (64, len(loader))
    assert card["precision"] == "bfloat16 autocast"
    assert (card["protocol"], card["selected_on"], card["monitor"]) == ("rigorous", "validation", "map@r")
    json.dumps(card)  # run_info.json holds it as it is


def test_the_card_of_a_vit_names_its_frozen_patch_embedding_and_the_class_epochs():
    cfg = compose_config(["experiment=quickstart", *fast_overrides(), "model=vit_small", "model.pretrained=false",
                          "+model.backbone.depth=1", "sampler=m_per_class", "sampler.per_epoch=classes"])
    model = builders.build_model(cfg, torch.device("cpu"), World())
    datasets = builders.build_datasets(cfg)
    loader = builders.build_train_loader(cfg, datasets["train"], torch.device("cpu"), World())
    card = audit_card(model, datasets, loader, world_size=1, amp_dtype=None, protocol="paper", monitor="recall@1")
    assert card["backbone"] == "VitSmall(vit_small_patch16_224.augreg_in21k_ft_in1k)"
    assert card["backbone_features"] == 384
    assert card["frozen"] == f"backbone.net.patch_embed.proj ({3 * 16 * 16 * 384 + 384:,} parameters)"
    assert card["batchnorm"] == "none" and card["pooling"] == "token"
    assert card["sampler"] == "MPerClassSampler(m=4, every class once per epoch)"
    assert card["batches_per_epoch"] == datasets["train"].num_classes * 4 // 64


def test_batchnorm_is_frozen_only_where_training_leaves_it_in_eval_mode():
    assert batchnorm_state(Embedder(SmallConvNet((4, 8)))) == "trained (2 BatchNorm2d)"
    assert batchnorm_state(Embedder(SmallConvNet((4, 8)), freeze_bn=True)).startswith("frozen (2 BatchNorm2d")


def test_the_hash_is_of_the_file_as_it_is_now(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"first version")
    assert sha256(path) == sha256sum(path)
    path.write_bytes(b"the second, longer version")
    assert sha256(path) == sha256sum(path)


def test_a_run_prints_its_card_and_keeps_it_in_run_info(quickstart_run):
    card = json.loads((quickstart_run / "run_info.json").read_text())["audit"]
    assert (card["backbone"], card["weights"], card["weights_sha256"]) == ("SmallConvNet", "random init", None)
    assert card["batchnorm"] == "trained (4 BatchNorm2d)"  # SmallConvNet's four conv-BN-ReLU blocks
    assert (card["embedding_size"], card["selected_on"], card["protocol"]) == (128, "test", "paper")
    splits = {role: (s["images"], s["classes"]) for role, s in card["splits"].items()}
    root = Path(OmegaConf.load(quickstart_run / ".hydra" / "config.yaml").dataset.root)
    assert splits == {"train": split_counts(root / "splits" / "train.csv"),
                      "query": split_counts(root / "splits" / "test.csv")}
    log = (quickstart_run / "train.log").read_text()
    assert "audit card" in log and "weights    random init" in log
    assert "selection  protocol=paper: the epoch is selected on test by recall@1" in log
