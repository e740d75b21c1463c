#!/usr/bin/env python
"""The GPU benchmark: one table of what decides a GPU run's speed. Needs a CUDA GPU.

    python scripts/bench_gpu.py [--steps 10] [--rounds 3] | tee bench_gpu.txt

1. Training: the paper's ResNet-50 at 224x224, batch 128, full steps of our Trainer on pinned
   in-memory uint8 batches: fp32, bf16, bf16 + channels_last, bf16 + channels_last + torch.compile;
   the bare PyTorch loop at bf16 + channels_last (framework overhead); and the pairwise losses with
   their miners at bf16 + channels_last (what mining costs next to cross-entropy).
2. Data pipeline with every CPU core: a DataLoader with one worker per core (pinned memory) over
   synthetic photo-like JPEGs, plain torchvision pipeline vs ours, at 500x375 and 1000x750.
3. Evaluation at SOP's size: ``retrieval_metrics`` on 60,502 random 2048-d embeddings in 11,316
   classes (leave-one-out, cosine), per search backend.
Takes about 5 minutes (the torch.compile warm-up is most of it).
"""

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dml_bench.bench import train_step
from dml_bench.bench.data_pipeline import PlainDataset, our_dataset, write_split
from dml_bench.bench.synthetic import write_jpegs
from dml_bench.bench.timing import interleaved_rates
from dml_bench.data.loaders import available_cpus
from dml_bench.engine.tables import markdown_table
from dml_bench.evaluation import retrieval_metrics

SOP_TEST_IMAGES, SOP_TEST_CLASSES = 60_502, 11_316


def training_rows(steps: int, rounds: int, device: torch.device, arch="resnet50", image_size=224,
                  batch_size=128, compile_model=True) -> list[list]:
    batches = train_step.make_batches(steps, batch_size, image_size, train_step.NUM_CLASSES, pin=device.type == "cuda")
    base = train_step.make_model(arch)

    def candidate(amp, channels_last, compiled=False, loss_name="cross-entropy", bare=False):
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        model = copy.deepcopy(base).to(device, memory_format=memory_format)
        if compiled:
            model.compile()
        loss, miner = train_step.loss_and_miner(loss_name, model.embedding_size, train_step.NUM_CLASSES)
        options = {"device": device, "amp_dtype": amp, "channels_last": channels_last}
        if bare:
            return train_step.bare_loop(model, loss.to(device), batches, **options)
        return train_step.trainer_epochs(model, loss.to(device), batches, miner=miner, **options)

    bf16 = torch.bfloat16
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
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="training steps per measured round")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds")
    parser.add_argument("--folder", type=Path, help="where to write the JPEGs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py measures a CUDA GPU and none is visible here (torch.cuda.is_available() is "
              "False). Run it on a GPU machine; CPU figures come from scripts/bench_data.py and "
              "scripts/bench_train.py.", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    workers = available_cpus()
    print(f"{torch.cuda.get_device_name(device)}, {workers} CPU cores, torch {torch.__version__}", flush=True)
    rows = training_rows(args.steps, args.rounds, device)
    with tempfile.TemporaryDirectory() as tmp:
        rows += data_rows(args.folder or Path(tmp), workers)
    rows += evaluation_rows(device)
    print(markdown_table(["part", "setting", "result"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
