"""The GPU benchmark's three parts (scripts/bench_gpu.py prints them): training steps, the data
pipeline with every core, and evaluation at SOP's size. Each returns rows of (part, setting, result).
"""

import copy
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dml_bench.bench import train_step
from dml_bench.bench.data_pipeline import PlainDataset, our_dataset, write_split
from dml_bench.bench.faiss_check import FAISS_GPU_PATH
from dml_bench.bench.synthetic import write_jpegs
from dml_bench.bench.timing import interleaved_rates
from dml_bench.evaluation import faiss_gpu, retrieval_metrics
from dml_bench.runtime.device import set_tf32

SOP_TEST_IMAGES, SOP_TEST_CLASSES = 60_502, 11_316


def training_rows(steps: int, rounds: int, device: torch.device, arch="resnet50", image_size=224,
                  batch_size=128, compile_model=True) -> list[list]:
    set_tf32(False)  # "fp32" is IEEE fp32, as a run with trainer.tf32=false (the paper recipes)
    batches = train_step.make_batches(steps, batch_size, image_size, train_step.NUM_CLASSES, pin=device.type == "cuda")
    base = train_step.make_model(arch)
    scratch = tempfile.TemporaryDirectory(prefix="bench_train_")  # the Trainers' TensorBoard files

    def candidate(amp, channels_last, compiled=False, loss_name="cross-entropy", bare=False):
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        model = copy.deepcopy(base).to(device, memory_format=memory_format)
        if compiled:
            model.compile()
        loss, miner = train_step.loss_and_miner(loss_name, model.embedding_size, train_step.NUM_CLASSES)
        options = {"device": device, "amp_dtype": amp, "channels_last": channels_last}
        if bare:
            return train_step.bare_loop(model, loss.to(device), batches, **options)
        return train_step.trainer_epochs(model, loss.to(device), batches, Path(scratch.name), miner=miner, **options)

    bf16 = torch.bfloat16
    with scratch:
        candidates = {
            "Trainer, cross-entropy, fp32": candidate(None, False),
            "Trainer, cross-entropy, bf16": candidate(bf16, False),
            "Trainer, cross-entropy, bf16 + channels_last": candidate(bf16, True),
            "bare loop, cross-entropy, bf16 + channels_last": candidate(bf16, True, bare=True),
        }
        if compile_model:
            candidates["Trainer, cross-entropy, bf16 + channels_last + compile"] = candidate(bf16, True, compiled=True)
        for name in train_step.LOSSES[1:]:
            candidates[f"Trainer, {name}, bf16 + channels_last"] = candidate(bf16, True, loss_name=name)
        rates = interleaved_rates(candidates, rounds)
    part = f"training, {arch} {image_size}, batch {batch_size}"
    return [[part, name, f"{max(r):.0f} images/s"] for name, r in rates.items()]


def data_rows(folder: Path, workers: int, counts=(((500, 375), 4096), ((1000, 750), 2048))) -> list[list]:
    rows = []
    for size, count in counts:
        root = folder / f"{size[0]}x{size[1]}"
        paths = write_jpegs(root / "images", size, count, workers=workers)
        write_split(root, paths)
        for name, dataset in (("plain", PlainDataset(paths)), ("ours", our_dataset(root))):
            loader = DataLoader(dataset, batch_size=128, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                persistent_workers=True, prefetch_factor=2)
            pinned = all(_first_tensor(batch).is_pinned() for batch in loader)  # epoch 1 starts workers
            start = time.perf_counter()
            seen = sum(len(_first_tensor(batch)) for batch in loader)
            rate = seen / (time.perf_counter() - start)
            rows.append([f"data, {workers} workers, {size[0]}x{size[1]} JPEGs", name,
                         f"{rate:.0f} images/s (batches pinned: {pinned})"])
    return rows


def _first_tensor(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def evaluation_rows(device: torch.device, images=SOP_TEST_IMAGES, classes=SOP_TEST_CLASSES, dim=2048) -> list[list]:
    generator = torch.Generator(device).manual_seed(0)
    embeddings = torch.randn(images, dim, device=device, generator=generator)
    labels = torch.arange(images, device=device) % classes
    rows = []
    for backend in ("auto", "faiss", "torch"):
        try:
            start = time.perf_counter()
            retrieval_metrics(embeddings, labels, backend=backend)
            result = f"{time.perf_counter() - start:.1f} s"
        except Exception as error:  # noqa: BLE001 - a failing backend is a result to report
            result = f"failed: {type(error).__name__}: {str(error)[:80]}"
        rows.append([f"evaluation, {images:,} x {dim} embeddings", f"backend={backend}", result])
    return rows + [["evaluation, FAISS", ", ".join(faiss_gpu.faiss_builds()) or "not installed",
                    FAISS_GPU_PATH[faiss_gpu.gpu_state()]]]
