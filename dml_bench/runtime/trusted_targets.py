"""Which ``_target_`` a config read from a file may instantiate.

``hydra.utils.instantiate`` imports and calls whatever ``_target_`` names, with the arguments
beside it: a config that comes from a file someone else wrote (the config stored in a
checkpoint, a sweep folder's ``.hydra/hydra.yaml``) could name ``torch.load`` of a pickle, or
any other callable, and run it. Such a config is instantiated only if each of its targets is
trusted: named by dml_bench's own ``configs/`` tree, or given by the user on the command line
(a ``_target_`` in an override, or an explicit ``trust_targets=[NAME]`` / ``--trust-target NAME``).
Nested targets count: every ``_target_`` anywhere in the config is checked.
"""

from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from dml_bench.runtime.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TARGET = "_target_"


def targets_in(tree, prefix: str = "") -> list[tuple[str, str]]:
    """Every ``(key, target)`` of a nested dict/list: ``key`` is where the ``_target_`` sits."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            if key == TARGET:
                if value is not None:  # ``_target_: null``: nothing to instantiate (miner: none)
                    found.append((where, str(value)))
            else:
                found += targets_in(value, where)
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            found += targets_in(value, f"{prefix}[{index}]")
    return found


@cache
def project_targets(config_dir: Path = CONFIG_DIR) -> frozenset[str]:
    """The targets dml_bench's own config files name (Hydra, PyTorch, pytorch-metric-learning and
    dml_bench classes and functions)."""
    targets = set()
    for path in config_dir.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            targets.update(target for _, target in targets_in(document))
    return frozenset(targets)


def override_targets(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """Every ``(key, target)`` that Hydra ``overrides`` set: a ``..._target_=NAME`` override, or a
    ``_target_`` inside a dict value (``+dataset.x={_target_:NAME}``), of every value of a sweep."""
    found = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            if key.split(".")[-1] == TARGET:
                found.append((key, str(value)))
            found += targets_in(value, key)
    return found


def command_line_targets(overrides: Iterable[str], trusted: Iterable[str] = ()) -> frozenset[str]:
    """The targets the user gave: those the ``overrides`` typed on the command line set, and
    ``trusted`` (``trust_targets=[...]``, ``--trust-target``)."""
    return frozenset({*trusted, *(target for _, target in override_targets(overrides))})


def check_targets(tree, source: str, trusted: Iterable[str], accept: Callable[[str], str]) -> None:
    """Refuse ``tree`` (a config read from ``source``) if it names a target that neither the
    project's configs nor ``trusted`` (the user's) name; ``accept(names)`` says how to accept them."""
    refuse_untrusted(targets_in(tree), source, trusted, accept)


def refuse_untrusted(found: list[tuple[str, str]], source: str, trusted: Iterable[str],
                     accept: Callable[[str], str]) -> None:
    """A UserError naming each of the ``found`` ``(key, target)`` read from ``source`` that is
    not trusted, and how to accept them (``accept(comma-separated names)``)."""
    allowed = project_targets() | set(trusted)
    unknown = [(key, target) for key, target in found if target not in allowed]
    if not unknown:
        return
    named = "; ".join(f"{target} (at {key})" for key, target in unknown)
    names = sorted({target for _, target in unknown})
    what = "a _target_" if len(unknown) == 1 else f"{len(unknown)} _target_ entries"
    raise UserError(
        f"Refusing to use the config from {source}: it names {what} that neither dml_bench's configs nor this "
        f"command name: {named}. Instantiating a target imports and calls it with the arguments the file "
        "gives, so a file from elsewhere could run any code this way. If you trust that file and want "
        f"{'this target' if len(names) == 1 else 'these targets'} called, accept "
        f"{'it' if len(names) == 1 else 'them'} explicitly: {accept(','.join(names))}."
    )
