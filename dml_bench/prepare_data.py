"""Command line: ``python -m dml_bench.prepare_data NAME --root DIR`` prepares a benchmark.

NAME is a benchmark's name or alias (``cub200`` or ``cub``); what it knows of each benchmark comes
from the benchmark's spec (``dml_bench.data.benchmarks``). NAME ``csv`` names a folder already in
the split-file format (``dataset=csv``): nothing is prepared, ``--verify`` and ``--cache`` run on it.
"""

import argparse
import logging
import sys
import textwrap

from dml_bench.data.benchmarks import SPECS, benchmark, choices_text, names_and_aliases
from dml_bench.data.cache import build_cache, cache_resize
from dml_bench.data.prepare import prepare_dataset
from dml_bench.data.prepare.near_duplicates import THRESHOLD, describe_near_duplicates
from dml_bench.data.prepare.verify import describe_duplicates, verify_images
from dml_bench.runtime.errors import UserError

DESCRIPTION = """\
Prepare a retrieval benchmark in DIR: obtain the official files, check their MD5, extract them
safely under DIR and write the zero-shot split files DIR/splits/<split>.csv (each benchmark's
splits are listed below), header "path,label", paths relative to DIR, labels the dataset's own
class ids. Any folder in this format trains with dataset=csv dataset.root=DIR. NAME is a
benchmark's name or its alias, or csv for such a folder: it is then only verified or cached."""

CSV = "csv"  # NAME of a folder in the split-file format: verified or cached, not prepared

EPILOG_TAIL = """\
Downloads stream into DIR/downloads/<file>.part and resume after an interruption; a file gets its
name only once complete and checked. Files with no official address must be obtained by hand: put
them in DIR/downloads/ or pass --source. A finished preparation writes DIR/.prepared; running the
command again then does nothing (delete that file to prepare again). The number of images per
split must match the full official dataset, otherwise nothing is written."""


def _official_files() -> str:
    lines = ["benchmarks, their splits and official files:"]
    for spec in SPECS:
        alias = "" if spec.alias == spec.name else f" or {spec.alias}"
        lines.append(f"  {spec.name}{alias} ({spec.title}): splits {', '.join(spec.splits)}")
        for f in spec.files:
            lines.append(f"    {f.name}  MD5 {f.md5 or 'not published'}  {f.url or ''}".rstrip())
        if spec.where_to_get:
            lines.extend(textwrap.wrap(
                f"obtain by hand: {spec.where_to_get}", width=96,
                initial_indent="    ", subsequent_indent="      ",
            ))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dml_bench.prepare_data",
        description=DESCRIPTION,
        epilog=f"{_official_files()}\n\n{EPILOG_TAIL}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name", metavar="NAME", choices=[*names_and_aliases(), CSV],
        help=f"one of {choices_text()}, or {CSV} (a folder already in the split-file format)"
    )
    parser.add_argument(
        "--root", required=True, metavar="DIR", help="the folder the dataset is prepared in"
    )
    parser.add_argument(
        "--source",
        metavar="DIR_OR_URL",
        help="a folder, or an http(s)/ftp URL prefix, holding the official files under their "
        "official names (default: the official URLs, and DIR/downloads/)",
    )
    parser.add_argument(
        "--skip-checksum", action="store_true",
        help="use files whose MD5 differs from the official one (e.g. a repacked mirror copy)",
    )
    parser.add_argument(
        "--verify", action="store_true",
        help="afterwards, decode every listed image and list those that fail (exit code 1 if any), "
        "report exact duplicates (same decoded pixels) within a class, across classes and across splits, "
        "and near-duplicates (perceptual hashes at most --near-threshold bits apart) across classes and "
        "across splits",
    )
    parser.add_argument(
        "--near-threshold", type=int, default=THRESHOLD, metavar="BITS",
        help=f"with --verify: the most bits of 64 in which the pHashes of near-duplicates differ (default "
        f"{THRESHOLD}; 0 finds only copies whose hashes are equal)",
    )
    parser.add_argument(
        "--cache", nargs="?", const="recipe", metavar="SIZE",
        help="afterwards, store every image resized as the recipe's first Resize makes it (or to "
        "SIZE: 256 for the shorter side, 256x256 for height x width) in DIR/cache/, for training "
        "with dataset.cache=true; uncompressed, about 200 KB per image",
    )
    parser.add_argument(
        "--allow-outside-root", action="store_true",
        help="let --verify and --cache read images the split files list outside DIR (absolute paths, "
        "'..'), as dataset.allow_outside_root=true lets training read them",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.name == CSV:
            if not (args.verify or args.cache):
                raise UserError(f"{CSV} names a folder already in the split-file format: there is nothing to "
                                "prepare; add --verify or --cache.")
            name = CSV
        else:
            name = benchmark(args.name).name
            prepare_dataset(name, args.root, source=args.source, skip_checksum=args.skip_checksum)
        if args.verify:
            if not 0 <= args.near_threshold < 64:
                raise UserError(f"--near-threshold {args.near_threshold}: choose a number of bits from 0 to 63.")
            checked, bad, duplicates, near = verify_images(args.root, args.near_threshold, args.allow_outside_root)
            print("\n".join(describe_duplicates(duplicates) + describe_near_duplicates(near, args.near_threshold)))
            if bad:
                print(f"{len(bad)} of {checked} images could not be decoded:", file=sys.stderr)
                for image in bad:
                    print(f"  {image.path}: {image.reason}", file=sys.stderr)
                return 1
            print(f"All {checked} images decode.")
        if args.cache:
            folder = build_cache(args.root, cache_resize(name, args.cache), allow_outside_root=args.allow_outside_root)
            print(f"Cache ready: {folder}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
