"""The values a user types, checked before anything is built, in one paragraph naming every bad key.

Without it a value of the wrong type or range ends in a traceback deep in torch or numpy
(``trainer.batch_size=abc``, ``sampler.m=0``), fails at the first evaluation
(``evaluation.distance=cos``) or silently gives another run (``trainer.epochs=1.5`` trains 2
epochs). Integers are written as integers: 1.5 and 2.0 are both refused, and true/false are never
numbers. ``trainer.amp`` is checked where it is resolved (``dml_bench.runtime.device.resolve_amp``, before
anything is built too), ``trainer.monitor`` once the metrics it names are computed.
"""

import logging
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from dml_bench.data.prepare.vehicleid import TEST_SIZES
from dml_bench.data.samplers import PER_EPOCH
from dml_bench.evaluation.knn import BACKENDS
from dml_bench.evaluation.retrieval import DISTANCES, EXCLUDE_MODES
from dml_bench.runtime.entry import in_multirun
from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """What a value must be: ``text`` tells the user, ``accepts`` tests a value."""

    text: str
    accepts: Callable[[object], bool]


def typed(value) -> str:
    """``value`` as it is written on the command line."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, list):
        return f"[{','.join(map(typed, value))}]"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int, maximum: int | None = None) -> Kind:
    text = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    return Kind(text, lambda value: _is_int(value) and minimum <= value and (maximum is None or value <= maximum))


def one_of(choices: Collection[str]) -> Kind:
    choices = tuple(choices)
    return Kind(f"one of {', '.join(choices)}", lambda value: isinstance(value, str) and value in choices)


def either(special, kind: Kind) -> Kind:
    """``special`` (auto or null) or a value of ``kind``."""
    return Kind(f"{typed(special)} or {kind.text}",
                lambda value: (type(value) is type(special) and value == special) or kind.accepts(value))


BOOLEAN = Kind("true or false", lambda value: isinstance(value, bool))
POSITIVE = Kind("a number > 0", lambda value: _is_number(value) and value > 0)
NON_NEGATIVE = Kind("a number >= 0", lambda value: _is_number(value) and value >= 0)
AUTO_OR_BOOLEAN = Kind("auto, true or false", lambda value: value == "auto" or isinstance(value, bool))
SEED = integer(0, 2**32 - 1)  # numpy's seeds
RECALL_KS = Kind("a list of integers >= 1", lambda value: isinstance(value, list | ListConfig)
                 and all(integer(1).accepts(k) for k in value))
DEVICE = Kind("one of auto, cpu, cuda, cuda:N", lambda value: isinstance(value, str)
              and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None)

# Each key a user may type, what its value must be and an example value. A key that the config
# lacks is skipped: sampler.m exists under sampler=m_per_class, save_embeddings in dml_bench.evaluate.
CHECKS: dict[str, tuple[Kind, object]] = {
    "seed": (SEED, 0),
    "trainer.device": (DEVICE, "cpu"),
    "trainer.epochs": (integer(0), 8),
    "trainer.batch_size": (integer(1), 128),
    "trainer.num_workers": (either("auto", integer(0)), 4),
    "trainer.pin_memory": (AUTO_OR_BOOLEAN, True),
    "trainer.tf32": (BOOLEAN, False),
    "trainer.channels_last": (BOOLEAN, False),
    "trainer.compile": (BOOLEAN, False),
    "trainer.eval_every": (integer(1), 1),
    "trainer.patience": (either(None, integer(1)), 5),
    "trainer.monitor_decimals": (either(None, integer(0)), 2),
    "trainer.log_every_steps": (integer(1), 10),
    "trainer.log_retrievals": (BOOLEAN, False),
    "trainer.grad_clip": (either(None, POSITIVE), 1.0),
    "trainer.progress": (BOOLEAN, False),
    "trainer.deterministic": (AUTO_OR_BOOLEAN, True),
    "trainer.checkpoint_every_steps": (either(None, integer(1)), 100),
    "trainer.distributed": (BOOLEAN, False),
    "trainer.sync_batchnorm": (AUTO_OR_BOOLEAN, False),
    "dataset.test_size": (one_of(TEST_SIZES), "large"),  # VehicleID's test set
    "sampler.m": (integer(1), 4),
    "sampler.per_epoch": (one_of(PER_EPOCH), "classes"),
    "optimizer.lr": (POSITIVE, 0.1),
    "optimizer.weight_decay": (NON_NEGATIVE, 0.0005),
    "optimizer.momentum": (NON_NEGATIVE, 0.9),
    "optimizer.nesterov": (BOOLEAN, True),
    "scheduler.warmup_iters": (integer(1), 100),
    "evaluation.recall_ks": (RECALL_KS, [1, 2, 4, 8]),
    "evaluation.distance": (one_of(DISTANCES), "cosine"),
    "evaluation.backend": (one_of(BACKENDS), "auto"),
    "evaluation.exclude": (one_of(EXCLUDE_MODES), "index"),
    "evaluation.euclidean_recall": (BOOLEAN, False),
    "evaluation.batch_size": (integer(1), 256),
    "retrievals.k": (integer(1), 8),
    "retrievals.queries": (integer(1), 8),
    "retrievals.seed": (SEED, 0),
    "projector.max_points": (integer(0), 2000),
    "save_embeddings": (BOOLEAN, True),
    "visualize": (BOOLEAN, True),
}

_ABSENT = object()


def check_config(cfg: DictConfig) -> None:
    """Raise one UserError that names each value of ``CHECKS`` in ``cfg`` that is not what it must
    be. A value left ``???`` is skipped: it is reported as a missing value when it is read."""
    problems = []
    for key, (kind, example) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not kind.accepts(value):
            problems.append(f"{key}={typed(value)} must be {kind.text}, e.g. {key}={typed(example)}")
    if problems:
        raise UserError("; ".join(problems) + ".")


def warn_unused_plugins() -> None:
    """Hydra hands only multiruns to a launcher or a sweeper: without ``-m``,
    ``hydra/launcher=slurm`` would silently run on this machine, and ``search=NAME`` (its Optuna
    sweeper) one run with the config's own values."""
    if in_multirun():
        return
    choices = HydraConfig.get().runtime.choices
    launcher, sweeper = choices.get("hydra/launcher"), choices.get("hydra/sweeper")
    if launcher not in (None, "basic"):
        log.warning("hydra/launcher=%s applies to multiruns (-m) only: this command runs here, on this machine.",
                    launcher)
    if sweeper not in (None, "basic"):
        search = choices.get("search")
        chosen = f"search={search} (hydra/sweeper={sweeper})" if search else f"hydra/sweeper={sweeper}"
        log.warning("%s applies to multiruns (-m) only: this command trains one run with the config's values; "
                    "add -m to search.", chosen)
