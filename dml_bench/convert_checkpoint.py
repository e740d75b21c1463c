"""Convert a checkpoint of an earlier dml_bench to the safe format, once you trust it:

    python -m dml_bench.convert_checkpoint PATH [PATH...] --i-trust-this-file

Earlier checkpoints stored the random generators' states as Python and numpy objects, which only
unpickling reads, and unpickling runs whatever code a file carries. dml_bench now loads
checkpoints with ``torch.load(weights_only=True)`` alone and refuses those files; this command
unpickles each one (so only run it on files you trust), turns every value into a tensor or plain
data (numpy arrays and tuples into lists, numpy scalars into numbers) and writes it back in place,
then checks that the safe loader reads it.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dml_bench.engine.checkpoint import load_checkpoint, save_checkpoint
from dml_bench.runtime.errors import UserError

PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def plain(value, where: str = "checkpoint"):
    """``value`` as tensors and plain data only; anything else is a UserError naming ``where``."""
    if isinstance(value, dict):
        return {key: plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PLAIN):
        return value
    raise UserError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which no dml_bench "
                    "checkpoint holds: this file was not written by dml_bench, and is not converted.")


def convert(path: Path) -> None:
    """Rewrite the trusted checkpoint at ``path`` in the safe format."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # the user trusts this file
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a dml_bench checkpoint: not converted.")
    save_checkpoint(path, plain(state))
    load_checkpoint(path)  # the safe loader reads it now


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="checkpoints to convert in place")
    parser.add_argument("--i-trust-this-file", action="store_true",
                        help="required: converting unpickles the file, which runs any code it carries")
    args = parser.parse_args(argv)
    if not args.i_trust_this_file:
        parser.error("converting unpickles each file, which runs any code it carries: add --i-trust-this-file "
                     "if you trust where these files come from")
    try:
        for path in args.paths:
            convert(path)
            print(f"converted: {path}")
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
