#!/usr/bin/env python
"""Training-step throughput: a bare PyTorch loop vs our Trainer, and the cost of each loss.

    python scripts/bench_train.py                        # CPU: the quickstart CNN on 32x32 images
    python scripts/bench_train.py --arch resnet50 --image-size 224 --amp bf16   # the paper's network

Full steps (forward, loss, backward, SGD) on in-memory uint8 batches of 128, so decoding is not
measured. Table 1: the same model, data and cross-entropy loss in a hand-written loop and in
``Trainer.train_one_epoch`` (framework overhead; goal >= 0.95x). Table 2: the Trainer with
cross-entropy vs pairwise losses with their miners. Candidates take turns round after round;
ratios compare the fastest rounds and, to show the noise, the rounds one by one.
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from dml_bench.bench.timing import RATIO_HEADERS, interleaved_rates, ratio_columns
from dml_bench.bench.train_step import (
    LOSSES,
    NUM_CLASSES,
    bare_loop,
    loss_and_miner,
    make_batches,
    make_model,
    trainer_epochs,
)
from dml_bench.runtime.tables import markdown_table


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", choices=("small", "resnet50"), default="small")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="steps per measured round (default 6)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: steadier on a shared machine)")
    return parser.parse_args(argv)


def rows_of(rates: dict[str, list[float]], baseline: str, batch_size: int) -> list[list]:
    columns = ratio_columns(rates, dict.fromkeys(rates, baseline))
    return [[name, f"{1000 * batch_size / max(r):.1f}", *columns[name]] for name, r in rates.items()]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    batches = make_batches(args.steps, args.batch_size, args.image_size, NUM_CLASSES, pin=device.type == "cuda")
    options = {"device": device, "amp_dtype": amp, "channels_last": args.channels_last}
    memory_format = torch.channels_last if args.channels_last else torch.preserve_format
    model = make_model(args.arch).to(device, memory_format=memory_format)

    def copies(loss_name):
        loss, miner = loss_and_miner(loss_name, model.embedding_size, NUM_CLASSES)
        return copy.deepcopy(model), loss.to(device), miner

    bare_model, bare_loss, _ = copies("cross-entropy")
    our_model, our_loss, _ = copies("cross-entropy")
    # One CPU thread is timed by its CPU time (steady on a shared machine); a GPU by wall time.
    clock = time.process_time if device.type == "cpu" and args.threads == 1 else time.perf_counter
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:  # the Trainers' TensorBoard files
        scratch = Path(scratch)
        overhead = interleaved_rates({
            "bare PyTorch loop": bare_loop(bare_model, bare_loss, batches, **options),
            "dml_bench Trainer": trainer_epochs(our_model, our_loss, batches, scratch, **options),
        }, args.rounds, clock)
        costs = {}
        for name in LOSSES:
            step_model, loss, miner = copies(name)
            costs[name] = trainer_epochs(step_model, loss, batches, scratch, miner=miner, **options)
        costs = interleaved_rates(costs, args.rounds, clock)

    setting = (f"{args.arch} at {args.image_size}x{args.image_size}, batch {args.batch_size}, {device}, "
               f"amp {args.amp}, channels_last {args.channels_last}, {args.threads} CPU thread(s), "
               f"{'CPU' if clock is time.process_time else 'wall'} time")
    headers = ["ms per step (best)", *RATIO_HEADERS]
    print(f"Training step, {setting}\n")
    print(markdown_table(["loop (cross-entropy)", *headers], rows_of(overhead, "bare PyTorch loop", args.batch_size)))
    print()
    print(markdown_table(["Trainer with", *headers], rows_of(costs, "cross-entropy", args.batch_size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
