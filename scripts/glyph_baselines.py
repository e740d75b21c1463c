#!/usr/bin/env python
"""Is the glyph data a retrieval problem a network must learn? Raw pixels vs untrained vs trained.

    python scripts/glyph_baselines.py [--root data/glyphs] [--run RUN_DIR]

Prints one Markdown row per embedding of the test split, with the metrics of every run
(leave-one-out, cosine, exact search): the raw pixels (each 32x32 greyscale image as a vector of
its 1,024 grey levels), and, given the folder of a finished run (``make train``), its untrained
network (epoch 0), its selected epoch and its last epoch, read from the run's ``metrics.json``.
The data must be prepared (``make train`` does it; or ``dml_bench.data.glyphs.prepare_glyphs``).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dml_bench.data.split_files import read_split, split_file
from dml_bench.evaluation import retrieval_metrics
from dml_bench.runtime.tables import markdown_table

METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision")


def raw_pixels(root: Path, split: str) -> dict[str, float]:
    rows = read_split(split_file(root, split))
    pixels = np.stack([np.asarray(Image.open(root / row.path).convert("L"), np.float32).reshape(-1) for row in rows])
    return retrieval_metrics(torch.from_numpy(pixels), torch.tensor([row.label for row in rows]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/glyphs"), help="the prepared glyph folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", type=Path, help="a finished run on that data: its epoch 0, selected and last epochs")
    args = parser.parse_args(argv)
    rows = [("raw pixels", raw_pixels(args.root, args.split))]
    if args.run:
        record = json.loads((args.run / "metrics.json").read_text())
        rows += [("untrained network (epoch 0)", record["initial_metrics"]),
                 (f"trained, selected epoch ({record['best_epoch']})", record["metrics"]),
                 (f"trained, last epoch ({record['last_epoch']})", record["final_metrics"])]
    print(markdown_table(["embedding", *METRICS], [[name, *(f"{m[key]:.4f}" for key in METRICS)] for name, m in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
