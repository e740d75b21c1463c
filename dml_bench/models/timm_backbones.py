"""timm backbones, ViT-S/16 among them, whose published weights are read offline.

Where the weights come from. timm publishes most weights on the Hugging Face hub; ``load_weights()``
looks for the model's file in the hub's local cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``, read when it is called) and, for the few weights timm still serves
from a URL, in the torch hub cache as the torchvision backbones do. Training never downloads: a
missing file stops the run at once with the command that fetches it. The file found (or the one
``model.weights`` names) goes through timm's own loading (``pretrained_cfg_overlay=dict(file=...)``),
which drops the classifier and resamples the position embedding to the model's ``img_size``.
"""

import os
from pathlib import Path

import timm
from huggingface_hub import try_to_load_from_cache
from torch import nn

from dml_bench.models.backbones import cached_weights_file
from dml_bench.models.pixel_normalize import IMAGENET_MEAN, IMAGENET_STD
from dml_bench.runtime.errors import UserError

# The files timm writes to and reads from a hub repository, in the order it tries them.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")

# model=vit_small: model.backbone.weights_name -> the timm model (architecture.tag) whose weights
# Ermolov et al. (CVPR 2022) start from. timm's vit_small_patch16_224 without a tag is
# augreg_in21k_ft_in1k, what their code loaded as "ViT-S pretrained on ImageNet-21k".
VIT_SMALL_WEIGHTS = {
    "in21k": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "dino": "vit_small_patch16_224.dino",
    "deit": "deit_small_distilled_patch16_224.fb_in1k",
}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment sets it now (huggingface_hub reads it once, at
    import)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second: its older name
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_timm_file(pretrained_cfg: dict) -> tuple[Path | None, str]:
    """(the cached file of these published weights or None, where it was looked for)."""
    if pretrained_cfg.get("hf_hub_id"):
        cache = hf_cache_dir()
        for name in HUB_FILES:
            found = try_to_load_from_cache(pretrained_cfg["hf_hub_id"], name, cache_dir=cache)
            if isinstance(found, str):
                return Path(found), str(cache)
        return None, f"the Hugging Face cache {cache} (repository {pretrained_cfg['hf_hub_id']})"
    if pretrained_cfg.get("url"):
        file = cached_weights_file(pretrained_cfg["url"])
        return (file if file.is_file() else None), str(file)
    return None, "any cache: timm publishes no weights for it"


def missing_timm_weights_error(name: str, where: str) -> UserError:
    fetch = f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    return UserError(
        f"The published weights of the timm model {name} are not in {where}, and training never "
        f"downloads them. Fetch them once on a machine with internet: `{fetch}` (HF_HOME or "
        "HF_HUB_CACHE move the cache; on a cluster, run it on the login node or copy the cache folder). "
        "Or pass model.weights=PATH to a local copy (model.safetensors or a PyTorch state dict), or "
        "model.pretrained=false to start from random weights."
    )


class TimmBackbone(nn.Module):
    """A timm model without its classifier: (B, 3, H, W) -> (B, out_features), pooled the model's
    own way (a ViT: its class token). ``img_size`` (vision transformers) sets the input size the
    position embedding is made for; ``freeze_patch_embed`` keeps the patch embedding's weights
    fixed (``requires_grad=False``, so the optimizer never sees them); other keyword arguments go
    to ``timm.create_model`` (``depth``, ``drop_path_rate``, ...). ``mean``/``std`` are those the
    weights were trained with, which the Embedder normalises with unless the config sets its own."""

    def __init__(self, name: str = "resnet50", img_size: int | None = None, freeze_patch_embed: bool = False,
                 **timm_args):
        super().__init__()
        if img_size is not None:
            timm_args["img_size"] = img_size
        self.arch, self.timm_args = name, timm_args
        try:
            self.net = timm.create_model(name, pretrained=False, num_classes=0, **timm_args)
        except RuntimeError as error:  # timm's "Unknown model"
            raise UserError(f"model.backbone.name={name}: {error} (`timm.list_models()` lists them).") from None
        except TypeError as error:  # an argument the architecture does not take
            raise UserError(f"The timm model {name} does not take these arguments {timm_args}: {error}") from None
        cfg = self.net.pretrained_cfg
        self.mean, self.std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        self.out_features = self.net.num_features
        if freeze_patch_embed:
            if not hasattr(self.net, "patch_embed"):
                raise UserError(f"model.backbone.freeze_patch_embed: the timm model {name} has no patch embedding.")
            self.net.patch_embed.requires_grad_(False)

    def forward(self, images):
        return self.net(images)

    def load_weights(self, path: str | Path | None = None) -> Path:
        """Load the published weights from the local caches, or the file ``path``; returns the file."""
        if path:
            file = Path(path)
            if not file.is_file():
                raise UserError(f"model.weights={path}: no such file.")
        else:
            file, where = cached_timm_file(self.net.pretrained_cfg)
            if file is None:
                raise missing_timm_weights_error(self.arch, where)
        try:
            loaded = timm.create_model(self.arch, pretrained=True, pretrained_cfg_overlay={"file": str(file)},
                                       num_classes=0, **self.timm_args)
        except (RuntimeError, OSError, ValueError, KeyError) as error:
            first_lines = " ".join(str(error).split("\n")[:3])
            raise UserError(f"The weights in {file} do not fit the timm model {self.arch} or cannot be read: "
                            f"{first_lines} Check model.backbone and model.weights.") from error
        self.net.load_state_dict(loaded.state_dict())
        return file


class VitSmall(TimmBackbone):
    """ViT-S/16 (384-d class token) with the weights ``weights_name`` (``VIT_SMALL_WEIGHTS``), its
    patch embedding frozen by default, as Ermolov et al. (after Chen et al.'s MoCo v3) train it.
    ``deit`` is DeiT-S distilled: its feature is the mean of the class and distillation tokens."""

    def __init__(self, weights_name: str = "in21k", img_size: int = 224, freeze_patch_embed: bool = True,
                 **timm_args):
        if weights_name not in VIT_SMALL_WEIGHTS:
            raise UserError(f"model.backbone.weights_name={weights_name} is not a ViT-S/16 weight set; choose "
                            f"one of {', '.join(VIT_SMALL_WEIGHTS)} (model.pretrained=false: random weights).")
        super().__init__(VIT_SMALL_WEIGHTS[weights_name], img_size=img_size,
                         freeze_patch_embed=freeze_patch_embed, **timm_args)
        self.weights_name = weights_name
