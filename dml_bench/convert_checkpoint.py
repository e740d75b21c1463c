"""Convert a checkpoint of an earlier dml_bench to the safe format, once you trust it:

    python -m dml_bench.convert_checkpoint PATH [PATH...] --i-trust-this-file

Earlier checkpoints stored the random generators' states as Python and numpy objects, which only
unpickling reads, and unpickling runs whatever code a file carries. dml_bench now loads
checkpoints with ``torch.load(weights_only=True)`` alone and refuses those files; this command
unpickles each one (so only run it on files you trust), turns every value into a tensor or plain
data (numpy arrays into lists, numpy scalars into numbers) and writes it back in place,
then checks that the safe loader reads it.
"""

import argparse
import sys
from pathlib import Path

import torch

from dml_bench.engine.checkpoint import load_checkpoint, plain_data, save_checkpoint
from dml_bench.runtime.errors import UserError


def convert(path: Path) -> None:
    """Rewrite the trusted checkpoint at ``path`` in the safe format."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # the user trusts this file
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a dml_bench checkpoint: not converted.")
    save_checkpoint(path, plain_data(state, strict=True))
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
