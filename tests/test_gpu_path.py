"""The GPU path, checked on the CPU as far as it goes: channels_last batches, torch.compile,
pinned batches copied without blocking, embeddings under inference_mode with AMP, TF32 off unless
asked for."""

import warnings

import pytest
import torch

from dml_bench.bench.train_step import make_batches
from dml_bench.data.loaders import make_loader
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.evaluation.embed import extract_embeddings
from dml_bench.losses import CrossEntropyLoss
from dml_bench.models import Embedder, SmallConvNet
from dml_bench.runtime.device import set_tf32


def make_trainer(tmp_path, device="cpu", channels_last=False, compiled=False, amp_dtype=None):
    torch.manual_seed(0)
    model = Embedder(SmallConvNet((8, 16)), embedding_size=8).to(device)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model = model.to(memory_format=memory_format)
    if compiled:
        model.compile()
    loss = CrossEntropyLoss(num_classes=10, embedding_size=8, label_smoothing=0.1).to(device)
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    settings = TrainerSettings(run_dir=tmp_path, epochs=1, device=torch.device(device), amp_dtype=amp_dtype,
                               channels_last=channels_last, progress=False)
    return Trainer(model, loss, optimizer, [], None, settings)


def batch():
    images, targets, _ = make_batches(1, 16, 16, num_classes=10, m=2)[0]
    return images, targets


def test_channels_last_feeds_the_network_channels_last_and_changes_no_result(tmp_path):
    images, targets = batch()
    plain, fast = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b", channels_last=True)
    seen = []
    fast.model.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    assert fast.model.backbone.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        torch.testing.assert_close(fast.train_step(images, targets), plain.train_step(images, targets))
    assert seen == [True, True]


def _torch_compile_works() -> str | None:
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2))
    except Exception as error:  # noqa: BLE001 - any failure: this machine cannot compile
        return f"{type(error).__name__}: {error}"
    return None


@pytest.mark.slow
def test_a_compiled_model_trains_a_step_like_the_eager_one(tmp_path):
    reason = _torch_compile_works()
    if reason:
        pytest.skip(f"torch.compile does not work on this machine: {reason}")
    images, targets = batch()
    eager, compiled = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b", compiled=True)
    for _ in range(2):
        torch.testing.assert_close(compiled.train_step(images, targets), eager.train_step(images, targets),
                                   atol=1e-4, rtol=1e-4)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # checkpoints unchanged


class _Images(torch.utils.data.Dataset):
    def __init__(self):
        self.images, self.targets = batch()
        self.labels = self.targets.tolist()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.targets[index], index


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_are_pinned_and_the_step_and_embedding_run(tmp_path):
    loader = make_loader(_Images(), 8, num_workers=1, pin_memory=True)
    images, targets, _ = next(iter(loader))
    assert images.is_pinned() and targets.is_pinned()
    trainer = make_trainer(tmp_path, device="cuda", channels_last=True, amp_dtype=torch.bfloat16)
    assert torch.isfinite(trainer.train_step(images, targets))
    embeddings, labels = extract_embeddings(trainer.model, loader, torch.device("cuda"), torch.bfloat16, progress=False)
    assert embeddings.dtype == torch.float32 and embeddings.shape == (16, 8)
    assert labels.tolist() == loader.dataset.labels


@pytest.fixture
def fp32_precision():
    """Puts back the process's TF32 flags after the test."""
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    saved = [flag.fp32_precision for flag in flags]
    yield flags
    for flag, precision in zip(flags, saved):
        flag.fp32_precision = precision


def test_tf32_is_off_for_matmuls_and_convolutions_unless_asked_for(fp32_precision):
    matmul, conv = fp32_precision
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flags this PyTorch recommends: no deprecation warning
        set_tf32(False)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        set_tf32(True)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        set_tf32(False)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_without_tf32_cuda_convolutions_and_matmuls_are_fp32_accurate(fp32_precision):
    # Against a float64 reference: fp32 keeps ~1e-6 relative error on these sums of 1152 products;
    # TF32 (10 mantissa bits, on Ampere and newer GPUs) ~1e-3.
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 128, 16, 16, generator=generator), torch.randn(64, 128, 3, 3, generator=generator)
    a, b = torch.randn(256, 1152, generator=generator), torch.randn(1152, 256, generator=generator)
    references = (torch.nn.functional.conv2d(x.double(), w.double()), a.double() @ b.double())
    set_tf32(False)
    results = (torch.nn.functional.conv2d(x.cuda(), w.cuda()), a.cuda() @ b.cuda())
    for result, reference in zip(results, references):
        error = (result.cpu().double() - reference).abs().max() / reference.abs().max()
        assert error < 1e-5, error
