"""ImageNet backbones: a classifier without its head, returning globally average-pooled features.

Where ImageNet weights come from. ``load_weights()`` reads the file that torchvision's weight enum
names, from the torch hub cache (``<torch.hub.get_dir()>/checkpoints/<file name of the enum's
URL>``, the place ``torchvision.models.resnet50(weights=...)`` would have put it). Training never
downloads: a job on a compute node without internet stops at once with the file name, the folder
and the one command that fetches it, instead of hanging on the network; and the file, whose name
carries a hash prefix, is the same on every machine. ``load_weights(path)`` reads a local copy.
"""

import pickle
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision
from torch import nn

from dml_bench.runtime.errors import UserError

# torchvision classifiers whose head is one ``fc`` Linear after global average pooling.
RESNET_FAMILY = ("resnet", "resnext", "wide_resnet")


def resnet_family() -> list[str]:
    return [name for name in torchvision.models.list_models(module=torchvision.models)
            if name.startswith(RESNET_FAMILY)]


def cached_weights_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps the file it downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(url).path).name


def missing_weights_error(arch: str, weights_name: str, url: str, file: Path) -> UserError:
    fetch = f"python -c \"import torch.hub; torch.hub.load_state_dict_from_url('{url}', check_hash=True)\""
    return UserError(
        f"The ImageNet weights of {arch} ({weights_name}) are not in the torch hub cache: {file} does "
        f"not exist, and training never downloads them. Fetch them once on a machine with internet: "
        f"`{fetch}` (or download {url} and put {file.name} in {file.parent}; the TORCH_HOME "
        f"environment variable moves that folder). Or pass model.weights=PATH to a local copy of "
        f"{file.name}, or model.pretrained=false to start from random weights."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise UserError(f"Cannot read the weights file {path}: {error}. Fetch it again (a partial "
                        "download is not a valid file) or point model.weights at another copy.") from error
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict (a dict of tensors).")
    return state


def load_without_head(net: nn.Module, state: dict, head: str | tuple[str, ...], source: Path) -> None:
    """Load ``state`` into ``net`` whose head (keys starting with ``head``, a prefix or a tuple of
    them) was removed; every other key must match exactly, so weights of another architecture
    are refused."""
    body = {key: value for key, value in state.items() if not key.startswith(head)}
    try:
        net.load_state_dict(body, strict=True)
    except RuntimeError as error:
        first_lines = " ".join(str(error).split("\n")[:3])
        raise UserError(f"The weights in {source} do not fit this backbone: {first_lines} Check "
                        "model.backbone and model.weights.") from error


def load_backbone_weights(backbone: nn.Module, weights: str | None) -> Path | str:
    """Initialise ``backbone`` from the file ``weights``, or from its published weights when None;
    returns what was read: the file, or a description where the backbone's library does not say."""
    if not hasattr(backbone, "load_weights"):
        raise UserError(f"model.pretrained/model.weights: {type(backbone).__name__} loads no weights "
                        "(backbones with a load_weights method do, such as model=resnet50); set "
                        "model.pretrained=false and model.weights=null.")
    return backbone.load_weights(weights)


class TorchvisionBackbone(nn.Module):
    """torchvision's ``arch`` (a ResNet-family classifier) without ``fc``: (B, 3, H, W) -> (B,
    out_features), globally average-pooled (2048-d for ResNet-50). Randomly initialised; the
    Embedder calls :meth:`load_weights` for ``weights_name`` (``IMAGENET1K_V1`` is what the
    paper's ``pretrained=True`` loaded)."""

    def __init__(self, arch: str = "resnet50", weights_name: str = "IMAGENET1K_V1"):
        super().__init__()
        if arch not in resnet_family():
            raise UserError(f"model.backbone.arch={arch} is not a torchvision ResNet-family model; "
                            f"choose one of {', '.join(resnet_family())}, or model=timm for others.")
        enum = torchvision.models.get_model_weights(arch)
        if weights_name not in enum.__members__:
            raise UserError(f"model.backbone.weights_name={weights_name} is not a weight set of {arch}; "
                            f"choose one of {', '.join(enum.__members__)}.")
        self.arch, self.url = arch, enum[weights_name].url
        self.weights_name = weights_name
        self.net = torchvision.models.get_model(arch, weights=None)
        self.out_features = self.net.fc.in_features
        self.net.fc = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def load_weights(self, path: str | Path | None = None) -> Path:
        """Load ImageNet weights from ``path``, or from the torch hub cache when ``path`` is None;
        returns the file read."""
        file = Path(path) if path else cached_weights_file(self.url)
        if not file.is_file():
            if path:
                raise UserError(f"model.weights={path}: no such file.")
            raise missing_weights_error(self.arch, self.weights_name, self.url, file)
        load_without_head(self.net, read_state_dict(file), "fc.", file)
        return file
