"""model=vit_small: ViT-S/16 with the weight sets of Ermolov et al., read from the Hugging Face cache
or a local file and never downloaded; the frozen patch embedding, the orthogonal head, the
normalisation that follows the weights, and a real training run on the 32 px glyphs."""

import json
import math

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from dml_bench.engine.optim import param_groups
from dml_bench.evaluate import evaluate
from dml_bench.models import Embedder, VitSmall
from dml_bench.models.pixel_normalize import IMAGENET_MEAN, IMAGENET_STD
from dml_bench.models.timm_backbones import VIT_SMALL_WEIGHTS
from dml_bench.runtime.errors import UserError, user_error_of
from dml_bench.train import train
from tests.helpers.config import compose_config
from tests.helpers.runs import exit_code, fast_overrides, hydra_job
from tests.helpers.tiny_runs import tiny_glyphs

# One transformer block instead of 12: the same code paths, a fraction of the time.
SHALLOW = "+model.backbone.depth=1"
# Per weight set: the timm class and the input normalisation its weights were trained with.
EXPECTED = {
    "in21k": ("VisionTransformer", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dino": ("VisionTransformer", IMAGENET_MEAN, IMAGENET_STD),
    "deit": ("VisionTransformerDistilled", IMAGENET_MEAN, IMAGENET_STD),
}


def vit_model(*overrides: str) -> Embedder:
    """model=vit_small, one block deep, as the quickstart builds it (a UserError raised as itself)."""
    cfg = compose_config(["experiment=quickstart", "model=vit_small", SHALLOW, *overrides])
    torch.manual_seed(0)
    try:
        return instantiate(cfg.model)
    except InstantiationException as error:
        raise (user_error_of(error) or error) from None


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def put_in_hf_cache(cache, repo_id: str, state: dict) -> None:
    """``state`` as huggingface_hub lays out a downloaded model.safetensors."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")


def published_state(weights_name: str, seed: int = 1) -> dict:
    """A state dict shaped as the published file of ``weights_name`` (224 px, its classifier
    included where it has one), one block deep, with weights of its own."""
    torch.manual_seed(seed)
    return timm.create_model(VIT_SMALL_WEIGHTS[weights_name], pretrained=False, depth=1).state_dict()


@pytest.mark.parametrize("weights_name", sorted(EXPECTED))
def test_each_weight_set_builds_its_architecture_normalisation_and_frozen_patch_embedding(weights_name):
    model = vit_model("model.pretrained=false", f"model.backbone.weights_name={weights_name}").train()
    cls, mean, std = EXPECTED[weights_name]
    assert type(model.backbone.net).__name__ == cls and model.backbone.net.patch_embed.img_size == (32, 32)
    # PixelNormalize's affine map sends byte 255 * mean to 0 and 255 * (mean + std) to 1.
    for value, target in ((torch.tensor(mean), 0.0), (torch.tensor(mean) + torch.tensor(std), 1.0)):
        normalised = (value * 255).view(1, 3, 1, 1) * model.input_norm.scale + model.input_norm.shift
        assert torch.allclose(normalised, torch.full((1, 3, 1, 1), target), atol=1e-5)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.net.patch_embed.proj.weight", "backbone.net.patch_embed.proj.bias"}
    embeddings = model(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert embeddings.shape == (3, 384) and torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize(("weights_name", "freeze"), [("in21k", True), ("dino", True), ("deit", True),
                                                     ("in21k", False)])
def test_an_optimizer_step_trains_all_but_the_frozen_patch_embedding(weights_name, freeze):
    model = vit_model("model.pretrained=false", "model.embedding_size=128",
                      f"model.backbone.weights_name={weights_name}",
                      f"model.backbone.freeze_patch_embed={str(freeze).lower()}").train()
    groups = param_groups(model, torch.nn.Identity(), weight_decay=0.01)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    embeddings = model(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert embeddings.shape == (4, 128)
    (embeddings[:2] * embeddings[2:]).sum().backward()
    optimizer.step()
    in_optimizer = {id(p) for group in groups for p in group["params"]}
    for name, p in model.named_parameters():
        frozen = freeze and "patch_embed" in name
        assert (id(p) in in_optimizer) != frozen, name
        assert torch.equal(before[name], p) == frozen, name


def test_the_orthogonal_384_head_keeps_the_backbones_cosine_similarities():
    model = vit_model("model.pretrained=false").eval().double()
    weight = model.linear.weight
    assert torch.allclose(weight @ weight.T, torch.eye(384, dtype=torch.float64), atol=1e-6)
    assert not model.linear.bias.any()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        features = F.normalize(model.backbone(model.input_norm(images).double()), dim=1)
        embeddings = model(model.input_norm(images).double())  # float input: taken as normalised
    assert torch.allclose(embeddings @ embeddings.T, features @ features.T, atol=1e-10)


@pytest.mark.parametrize("weights_name", ["in21k", "dino"])
def test_pretrained_reads_the_hugging_face_cache_and_resamples_the_position_embedding(hf_cache, weights_name):
    state = published_state(weights_name)
    repo_id = timm.create_model(VIT_SMALL_WEIGHTS[weights_name], pretrained=False).pretrained_cfg["hf_hub_id"]
    put_in_hf_cache(hf_cache, repo_id, state)
    model = vit_model(f"model.backbone.weights_name={weights_name}")
    assert model.initial_weights.name == "model.safetensors" and hf_cache in model.initial_weights.parents
    loaded = model.backbone.net.state_dict()
    assert set(loaded) == {key for key in state if not key.startswith("head.")}
    assert all(torch.equal(loaded[key], state[key]) for key in loaded if key != "pos_embed")
    # 14 x 14 patches + the class token at 224 px; 2 x 2 + 1 at 32 px, the grid resampled.
    assert state["pos_embed"].shape == (1, 197, 384) and loaded["pos_embed"].shape == (1, 5, 384)
    assert torch.equal(loaded["pos_embed"][:, 0], state["pos_embed"][:, 0])


def test_weights_path_reads_a_local_state_dict(tmp_path, hf_cache):
    state = published_state("deit", seed=2)
    torch.save(state, tmp_path / "deit.pth")
    model = vit_model("model.backbone.weights_name=deit", f"model.weights={tmp_path / 'deit.pth'}")
    assert model.initial_weights == tmp_path / "deit.pth"
    assert torch.equal(model.backbone.net.dist_token, state["dist_token"])
    assert torch.equal(model.backbone.net.blocks[0].mlp.fc1.weight, state["blocks.0.mlp.fc1.weight"])


def test_weights_of_another_architecture_are_refused(tmp_path, hf_cache):
    torch.save(published_state("deit"), tmp_path / "deit.pth")  # a distillation token the plain ViT lacks
    with pytest.raises(UserError, match="do not fit the timm model vit_small_patch16_224.dino"):
        vit_model("model.backbone.weights_name=dino", f"model.weights={tmp_path / 'deit.pth'}")


def test_missing_weights_name_the_model_the_cache_and_the_fetch_command(hf_cache):
    with pytest.raises(UserError) as error:
        vit_model("model.backbone.weights_name=dino")
    message = str(error.value)
    assert str(hf_cache) in message and "timm/vit_small_patch16_224.dino" in message
    assert "timm.create_model('vit_small_patch16_224.dino', pretrained=True)" in message
    assert "model.weights=PATH" in message and "model.pretrained=false" in message


def test_missing_weights_stop_a_run_with_one_paragraph_and_no_traceback(hf_cache, tmp_path, capsys):
    with hydra_job(["experiment=quickstart", *fast_overrides(), "model=vit_small", SHALLOW],
                   output_dir=tmp_path / "run") as cfg:
        assert exit_code(train, cfg) == 1
    stderr = capsys.readouterr().err
    assert "vit_small_patch16_224.augreg_in21k_ft_in1k" in stderr and "Traceback" not in stderr


def test_unknown_weight_set_and_head_init_list_the_choices():
    with pytest.raises(UserError, match="in21k, dino, deit"):
        VitSmall("imagenet")
    with pytest.raises(UserError, match="default, orthogonal"):
        vit_model("model.pretrained=false", "model.linear_init=xavier")


def quickstart_vit(output_dir, *overrides: str) -> dict:
    """experiment=quickstart model=vit_small model.pretrained=false run in this process; its metrics.json.
    ``overrides`` come last: a ``dataset.root`` among them replaces the session's glyphs."""
    args = ["experiment=quickstart", "model=vit_small", "model.pretrained=false", *fast_overrides(), *overrides]
    with hydra_job(args, output_dir=output_dir) as cfg:
        assert exit_code(train, cfg) == 0
    return json.loads((output_dir / "metrics.json").read_text())


def test_quickstart_trains_a_randomly_initialised_vit_on_the_glyphs_and_evaluate_reads_it_back(tmp_path):
    """The 32 px glyphs in 2 x 2 patches, one epoch (a subset of them: tiny_glyphs); dml_bench.evaluate
    rebuilds the model from the checkpoint alone and gets the run's metrics."""
    summary = quickstart_vit(tmp_path / "run", SHALLOW, f"dataset.root={tiny_glyphs(tmp_path / 'data')}")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [0, 1]
    assert math.isfinite(history[1]["train_loss"]) and 0 < history[1]["metrics"]["recall@1"] <= 1
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    with hydra_job([f"checkpoint={checkpoint}", "trainer.progress=false"], config_name="evaluate",
                   output_dir=tmp_path / "evaluate") as cfg:
        assert exit_code(evaluate, cfg) == 0
    evaluated = json.loads((checkpoint.parent / "best_eval_metrics.json").read_text())["metrics"]
    assert evaluated == pytest.approx(summary["metrics"], abs=1e-6)


def test_the_frozen_backbone_baseline_is_every_384_d_runs_epoch_0(tmp_path):
    """trainer.epochs=0 model.embedding_size=null scores the backbone's own class token; the
    orthogonal 384-d head changes no cosine similarity, so its epoch 0 scores the same (on the
    tiny_glyphs subset)."""
    data = f"dataset.root={tiny_glyphs(tmp_path / 'data')}"
    features = quickstart_vit(tmp_path / "features", SHALLOW, "trainer.epochs=0", "model.embedding_size=null", data)
    head = quickstart_vit(tmp_path / "head", SHALLOW, "trainer.epochs=0", data)
    assert features["best_epoch"] == head["best_epoch"] == 0
    # float32 rounding after the rotation may swap exact near-ties: two queries at most.
    assert head["metrics"] == pytest.approx(features["metrics"], abs=2 / head["metrics"]["num_queries"])


@pytest.mark.slow
def test_quickstart_trains_the_full_depth_vit_on_the_glyphs(tmp_path):
    """The command of docs/paper.md as typed (12 blocks), one short epoch."""
    summary = quickstart_vit(tmp_path / "run")
    assert summary["status"] == "completed" and 0 < summary["metrics"]["recall@1"] <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_vit_cub_step_in_bf16_on_the_gpu_matches_fp32():
    """The recipe's precision (bf16 autocast, trainer.amp=auto on CUDA) at 224 px, 2 blocks: the
    loss of a step close to fp32's, its gradients finite."""
    cfg = compose_config(["experiment=vit_cub", "model.pretrained=false", "+model.backbone.depth=2"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).cuda().train()
    loss = instantiate(cfg.loss)
    images = torch.randint(0, 256, (36, 3, 224, 224), dtype=torch.uint8, device="cuda")
    labels = torch.arange(4, device="cuda").repeat_interleave(9)
    values = {}
    for dtype in (torch.bfloat16, None):
        model.zero_grad()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            embeddings = model(images)
        values[dtype] = loss(embeddings.float(), labels)
        values[dtype].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    assert values[torch.bfloat16].item() == pytest.approx(values[None].item(), rel=0.05)
