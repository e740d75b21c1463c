"""The run audit card: the facts that decide whether two runs' numbers may be compared.

Read from the objects the run built (the model's modules, the datasets, the sampler), not from
config strings: the weights file is the one the backbone read, hashed; BatchNorm counts as frozen
when the model's own ``train()`` leaves its BatchNorm2d layers in eval mode. Printed at the start
of a run and stored under ``audit`` in run_info.json; ``dml_bench.comparison.aggregate`` warns when runs set
side by side differ in backbone, weights, embedding size or image sizes (``compared_fields``).
"""

import functools
import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

RANDOM_INIT = "random init"


def sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """Hashed once per process for each version of a file (a multirun's jobs share the weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backbone_name(backbone: nn.Module) -> str:
    arch = getattr(backbone, "arch", None)
    return f"{type(backbone).__name__}({arch})" if arch else type(backbone).__name__


def batchnorm_state(model: nn.Module) -> str:
    """How the backbone's BatchNorm2d layers train: with the model in train mode, those left in
    eval mode are frozen."""
    was_training = model.training
    model.train()
    layers = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d | nn.SyncBatchNorm)]
    frozen = sum(not m.training for m in layers)
    model.train(was_training)
    if not layers:
        return "none"
    if frozen == len(layers):
        return f"frozen ({len(layers)} BatchNorm2d in eval mode while training)"
    if frozen == 0:
        return f"trained ({len(layers)} BatchNorm2d)"
    return f"partly frozen ({frozen} of {len(layers)} BatchNorm2d)"


def pooling(backbone: nn.Module) -> str:
    """The backbone's last global pooling layer; timm's pooling layers carry a ``pool_type``, its
    vision transformers a ``global_pool`` string instead of a layer."""
    found = getattr(getattr(backbone, "net", None), "global_pool", None)
    for module in backbone.modules():
        if isinstance(module, nn.AdaptiveAvgPool2d):
            found = "global average"
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            found = "global max"
        elif isinstance(getattr(module, "pool_type", None), str):
            found = f"global {module.pool_type}"
    return found if isinstance(found, str) else "not found"


def frozen_parameters(model: nn.Module) -> str:
    """The modules whose parameters no optimizer sees (``requires_grad=False``: ViT-S's patch
    embedding), and how many parameters they hold; "none"."""
    frozen = [(name, p.numel()) for name, p in model.named_parameters() if not p.requires_grad]
    if not frozen:
        return "none"
    modules = sorted({name.rsplit(".", 1)[0] for name, _ in frozen})
    return f"{', '.join(modules)} ({sum(n for _, n in frozen):,} parameters)"


def neck(model: nn.Module) -> str:
    parts = []
    if isinstance(model.linear, nn.Linear):
        parts.append(f"Linear({model.linear.in_features}->{model.linear.out_features})")
    if isinstance(model.bn1d, nn.BatchNorm1d):
        parts.append(f"BatchNorm1d(affine={model.bn1d.affine})")
    return " + ".join(parts) or "none"


def image_sizes(transform) -> dict:
    """The crop and the Resize before it (shorter side, or [height, width]) of a transform."""
    resize = getattr(transform, "resize", None)
    return {"crop": getattr(transform, "crop_size", None),
            "resize": resize if resize is None or isinstance(resize, int) else list(resize)}


def precision(amp_dtype: torch.dtype | None) -> str:
    return f"{str(amp_dtype).removeprefix('torch.')} autocast" if amp_dtype is not None else "float32"


def audit_card(model: nn.Module, datasets: dict, train_loader, *, world_size: int,
               amp_dtype: torch.dtype | None, protocol: str, monitor: str) -> dict:
    """The card of a run: ``model`` (an Embedder), its ``datasets`` by role (train, validation,
    query, gallery), the training loader, and how it trains and selects its epoch."""
    weights = model.initial_weights
    sampler = train_loader.sampler
    sampler_options = f"(m={sampler.m})" if hasattr(sampler, "m") else ""
    if getattr(sampler, "per_epoch", "images") == "classes":
        sampler_options = f"(m={sampler.m}, every class once per epoch)"
    return {
        "backbone": backbone_name(model.backbone),
        "backbone_features": model.backbone.out_features,
        "weights": RANDOM_INIT if weights is None else str(weights),
        "weights_sha256": sha256(weights) if isinstance(weights, Path) else None,
        "batchnorm": batchnorm_state(model),
        "frozen": frozen_parameters(model),
        "pooling": pooling(model.backbone),
        "neck": neck(model),
        "embedding_size": model.embedding_size,
        "l2_normalize": bool(model.l2_normalize),
        "train_images": image_sizes(datasets["train"].transform),
        "test_images": image_sizes(datasets["query"].transform),
        "splits": {role: {"images": len(d), "classes": d.num_classes} for role, d in datasets.items()},
        "sampler": type(sampler).__name__ + sampler_options,
        "batch_size": train_loader.batch_size * world_size,
        "batches_per_epoch": len(train_loader),
        "precision": precision(amp_dtype),
        "protocol": protocol,
        "selected_on": "validation" if "validation" in datasets else "test",
        "monitor": monitor,
    }


def image_text(sizes: dict) -> str:
    resize = sizes["resize"]
    return f"{sizes['crop']} px crops" + (f" of images resized to {resize}" if resize is not None else "")


def compared_fields(card: dict) -> dict[str, str]:
    """The fields in which runs whose numbers are set side by side should agree, as text; the
    weights by their SHA-256 where a file was read (its path differs between machines)."""
    fields = {"backbone": card["backbone"], "weights": card["weights"], "embedding_size": str(card["embedding_size"]),
              "train_images": image_text(card["train_images"]), "test_images": image_text(card["test_images"])}
    if card["weights_sha256"]:
        fields["weights"] = f"sha256 {card['weights_sha256'][:16]}"
    return fields


def card_lines(card: dict) -> list[str]:
    """The card as a compact block of labelled lines."""
    weights = card["weights"] + (f" (sha256 {card['weights_sha256']})" if card["weights_sha256"] else "")
    splits = "; ".join(f"{role} {s['images']} images / {s['classes']} classes" for role, s in card["splits"].items())
    return [
        f"backbone   {card['backbone']}: {card['backbone_features']}-d features, {card['pooling']} pooling, "
        f"BatchNorm {card['batchnorm']}, frozen parameters: {card['frozen']}",
        f"weights    {weights}",
        f"neck       {card['neck']} -> {card['embedding_size']}-d embedding, "
        f"L2 normalisation {'on' if card['l2_normalize'] else 'off'}",
        f"images     train {image_text(card['train_images'])}; test {image_text(card['test_images'])}",
        f"splits     {splits}",
        f"batches    {card['sampler']}, {card['batch_size']} per step, {card['batches_per_epoch']} steps per epoch, "
        f"{card['precision']}",
        f"selection  protocol={card['protocol']}: the epoch is selected on {card['selected_on']} "
        f"by {card['monitor']}",
    ]


def log_card(card: dict) -> None:
    log.info("audit card (also in run_info.json, under audit):")
    for line in card_lines(card):
        log.info("  %s", line)
