"""The benchmarks, each by its spec: the one place the code looks a benchmark up.

Each spec (``dml_bench.data.prepare.spec.DatasetSpec``) lives in its benchmark's module under
``dml_bench/data/prepare/``; adding a benchmark means writing that module, listing its ``SPEC``
here, and its two Hydra files ``configs/dataset/<name>.yaml`` and
``configs/experiment/<experiment>.yaml`` (tests/test_benchmark_specs.py checks they agree), plus a
miniature copy of its official files for the tests (tests/helpers/miniature_datasets.py).

A benchmark is named by its name or its alias (``cub200`` or ``cub``). From the command line,
for the Makefile::

    python -m dml_bench.data.benchmarks                          # the table of benchmarks
    python -m dml_bench.data.benchmarks cub                      # cub200
    python -m dml_bench.data.benchmarks cub --field experiment   # paper_cub
"""

import argparse
import sys

from dml_bench.data.prepare import cars196, cub200, inaturalist, inshop, sop, vehicleid
from dml_bench.data.prepare.spec import DatasetSpec
from dml_bench.runtime.errors import UserError

SPECS: tuple[DatasetSpec, ...] = (cub200.SPEC, cars196.SPEC, sop.SPEC, inshop.SPEC, inaturalist.SPEC, vehicleid.SPEC)
BENCHMARKS: dict[str, DatasetSpec] = {spec.name: spec for spec in SPECS}
_BY_NAME_OR_ALIAS: dict[str, DatasetSpec] = {key: spec for spec in SPECS for key in (spec.name, spec.alias)}
FIELDS = ("name", "alias", "title", "experiment")


def find_benchmark(name: str) -> DatasetSpec | None:
    """The spec of the benchmark named ``name`` (its name or alias), or None."""
    return _BY_NAME_OR_ALIAS.get(name)


def benchmark(name: str) -> DatasetSpec:
    """The spec of the benchmark named ``name`` (its name or alias); a UserError if none is."""
    spec = find_benchmark(name)
    if spec is None:
        raise UserError(f"Unknown dataset {name!r}: choose one of {choices_text()}.")
    return spec


def names_and_aliases() -> list[str]:
    """Every name a benchmark answers to."""
    return list(_BY_NAME_OR_ALIAS)


def choices_text() -> str:
    """``cub200 (or cub), cars196 (or cars), sop, inshop``."""
    return ", ".join(spec.name if spec.alias == spec.name else f"{spec.name} (or {spec.alias})" for spec in SPECS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dml_bench.data.benchmarks",
        description="The benchmarks, or one fact of one of them (for the Makefile).",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"a benchmark: {choices_text()}")
    parser.add_argument("--field", choices=FIELDS, default="name", help="what to print of NAME (default: name)")
    args = parser.parse_args(argv)
    if args.name is None:
        for spec in SPECS:
            counts = ", ".join(f"{split} {count:,}" for split, count in spec.standard_counts.items())
            print(f"{spec.name:<11} {spec.alias:<9} {spec.experiment:<13} {spec.title} ({counts})")
        return 0
    try:
        print(getattr(benchmark(args.name), args.field))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
