"""Backbones: ImageNet weights come from the torch hub cache or a local file, never the network;
frozen BatchNorm2d stays frozen. (Every model config embedding with a gradient on every parameter:
test_configs.py.)"""

import pytest
import torch
import torchvision
from hydra.utils import instantiate

from dml_bench.models import Embedder, SmallConvNet, TimmBackbone, TorchvisionBackbone
from dml_bench.runtime.errors import UserError
from dml_bench.train import train
from tests.helpers.config import CONFIG_DIR, compose_config
from tests.helpers.runs import exit_code, fast_overrides, hydra_job

TORCHVISION_MODELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name in torchvision's IMAGENET1K_V1 URL


def test_every_resnet_config_has_its_own_arch():
    configs = {p.stem for p in (CONFIG_DIR / "model").glob("resnet*.yaml")}
    assert configs == set(TORCHVISION_MODELS)


def test_neck_options_from_the_config():
    cfg = compose_config(["model=resnet18", "model.pretrained=false", "model.embedding_size=64",
                          "model.bn1d=true", "model.l2_normalize=true"])
    model = instantiate(cfg.model).train()
    assert isinstance(model.linear, torch.nn.Linear) and model.linear.in_features == 512
    assert isinstance(model.bn1d, torch.nn.BatchNorm1d) and not model.bn1d.affine
    embeddings = model(torch.randn(4, 3, 32, 32))
    assert embeddings.shape == (4, 64)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache: <tmp>/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


def saved_resnet18(path):
    """A torchvision resnet18 state dict (fc included, as in the published file) saved to ``path``."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def assert_loaded(backbone: TorchvisionBackbone, state: dict):
    loaded = backbone.net.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_pretrained_reads_the_file_named_by_the_weight_enum_from_the_hub_cache(torch_home):
    state = saved_resnet18(torch_home / RESNET18_FILE)
    model = Embedder(TorchvisionBackbone("resnet18"), pretrained=True)
    assert_loaded(model.backbone, state)


def test_weights_path_reads_a_local_file(tmp_path):
    state = saved_resnet18(tmp_path / "elsewhere" / "my_resnet18.pth")
    cfg = compose_config(["model=resnet18", f"model.weights={tmp_path / 'elsewhere' / 'my_resnet18.pth'}"])
    assert_loaded(instantiate(cfg.model).backbone, state)


def test_missing_weights_name_the_file_and_the_cache_folder(torch_home):
    with pytest.raises(UserError) as error:
        Embedder(TorchvisionBackbone("resnet18"), pretrained=True)
    message = str(error.value)
    assert RESNET18_FILE in message and str(torch_home) in message
    assert "model.weights=PATH" in message and "model.pretrained=false" in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(UserError, match="do not fit"):
        Embedder(TorchvisionBackbone("resnet18"), weights=str(path))


def test_a_partial_download_in_the_cache_is_a_user_error(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / RESNET18_FILE).write_bytes(b"\x80\x02 half a file")
    with pytest.raises(UserError, match="Cannot read the weights file"):
        Embedder(TorchvisionBackbone("resnet18"), pretrained=True)


def test_unknown_arch_and_weight_set_list_the_choices():
    with pytest.raises(UserError, match="resnet50"):
        TorchvisionBackbone("vgg16")
    with pytest.raises(UserError, match="IMAGENET1K_V1"):
        TorchvisionBackbone("resnet18", weights_name="IMAGENET22K")


def test_a_backbone_without_weights_refuses_pretrained():
    with pytest.raises(UserError, match="model.pretrained=false"):
        Embedder(SmallConvNet((4, 8)), pretrained=True)


def test_freeze_bn_keeps_running_statistics_and_trains_affine_parameters():
    torch.manual_seed(0)
    model = Embedder(TorchvisionBackbone("resnet18"), bn1d=True, freeze_bn=True).train()
    bn2d = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = {name: t.clone() for name, t in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 3, 32, 32) * 3 + 1).square().mean().backward()
    optimizer.step()
    after = model.state_dict()
    assert bn2d and not any(m.training for m in bn2d) and model.bn1d.training
    for name, value in before.items():
        unchanged = torch.equal(value, after[name])
        if "running_" in name or "num_batches_tracked" in name:
            assert unchanged == name.startswith("backbone."), name  # BN2d frozen, BN1d updates
        elif name.endswith((".weight", ".bias")) and "bn" in name:
            assert not unchanged, name  # affine parameters of BN2d still train


def test_without_freeze_bn_running_statistics_move():
    model = Embedder(TorchvisionBackbone("resnet18")).train()
    before = model.backbone.net.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) + 1)
    assert not torch.equal(before, model.backbone.net.bn1.running_mean)


def test_missing_weights_stop_a_run_with_one_paragraph_and_no_traceback(torch_home, tmp_path, capsys):
    with hydra_job(["experiment=quickstart", *fast_overrides(), "model=resnet18"], output_dir=tmp_path / "run") as cfg:
        assert exit_code(train, cfg) == 1
    stderr = capsys.readouterr().err
    assert RESNET18_FILE in stderr and str(torch_home) in stderr
    assert "Traceback" not in stderr


def test_a_timm_model_that_does_not_exist_or_take_the_arguments_is_a_user_error():
    with pytest.raises(UserError, match="timm.list_models"):
        TimmBackbone("resnet_fifty")
    with pytest.raises(UserError, match="does not take these arguments"):
        TimmBackbone("resnet18", img_size=32)  # a CNN has no position embedding to size
    with pytest.raises(UserError, match="has no patch embedding"):
        TimmBackbone("resnet18", freeze_patch_embed=True)


def test_model_timm_reads_its_weights_offline_and_names_the_fetch_command(tmp_path, monkeypatch):
    """Never downloaded: an empty Hugging Face cache stops at once with the command that fills it."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError) as error:
        Embedder(TimmBackbone("resnet18"), pretrained=True)
    message = str(error.value)
    assert str(tmp_path / "hub") in message and "timm.create_model('resnet18', pretrained=True)" in message
