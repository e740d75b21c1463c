#!/usr/bin/env python
"""The GPU benchmark: one table of what decides a GPU run's speed. Needs a CUDA GPU.

    python scripts/bench_gpu.py [--steps 10] [--rounds 3] | tee bench_gpu.txt
    python scripts/bench_gpu.py --faiss-only     # part 4 alone, in seconds

1. Training: the paper's ResNet-50 at 224x224, batch 128, full steps of our Trainer on pinned
   in-memory uint8 batches: fp32, bf16, bf16 + channels_last, bf16 + channels_last + torch.compile;
   the bare PyTorch loop at bf16 + channels_last (framework overhead); and the pairwise losses with
   their miners at bf16 + channels_last (what mining costs next to cross-entropy).
2. Data pipeline with every CPU core: a DataLoader with one worker per core (pinned memory) over
   synthetic photo-like JPEGs, plain torchvision pipeline vs ours, at 500x375 and 1000x750.
3. Evaluation at SOP's size: ``retrieval_metrics`` on 60,502 random 2048-d embeddings in 11,316
   classes (leave-one-out, cosine), per search backend; then the installed FAISS build and whether
   its GPU path ran (or failed here, the torch backend searching instead).
4. FAISS: the installed build and version, the kernels its library holds and how they reach this
   GPU (native code, or PTX the driver compiles: Blackwell with the faiss-gpu wheel), and a GPU
   flat-index search checked against a float64 brute force, its first call timed apart.
Takes about 5 minutes (the torch.compile warm-up is most of it).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from dml_bench.bench.faiss_check import build_rows, gpu_index_rows
from dml_bench.bench.gpu import data_rows, evaluation_rows, training_rows
from dml_bench.data.loaders import available_cpus
from dml_bench.runtime.tables import markdown_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="training steps per measured round")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds")
    parser.add_argument("--folder", type=Path, help="where to write the JPEGs (default: a temporary folder)")
    parser.add_argument("--faiss-only", action="store_true", help="only part 4, the FAISS check")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py measures a CUDA GPU and none is visible here (torch.cuda.is_available() is "
              "False). Run it on a GPU machine; CPU figures come from scripts/bench_data.py and "
              "scripts/bench_train.py.", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    workers = available_cpus()
    print(f"{torch.cuda.get_device_name(device)}, {workers} CPU cores, torch {torch.__version__}", flush=True)
    rows = []
    if not args.faiss_only:
        rows += training_rows(args.steps, args.rounds, device)
        with tempfile.TemporaryDirectory() as tmp:
            rows += data_rows(args.folder or Path(tmp), workers)
        rows += evaluation_rows(device)
    rows += build_rows(torch.cuda.get_device_capability(device)) + gpu_index_rows()
    print(markdown_table(["part", "setting", "result"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
