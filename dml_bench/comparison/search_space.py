"""The search space of a ``search=NAME`` sweep, from Hydra's sweep syntax to Optuna's distributions.

``hydra.sweeper.params`` (configs/search/, configs/hydra/sweeper/equal_budget.yaml) and the
command line's overrides, in that order, a later one replacing an earlier one of the same key:

- ``choice(a, b, ...)``: one of the values (``CategoricalDistribution``);
- ``interval(a, b)``: uniform in [a, b], ``tag(log, interval(a, b))`` log-uniform (``FloatDistribution``,
  or ``IntDistribution`` for ``int(interval(a, b))``);
- ``range(start, stop[, step])``: Python's range, ``stop`` excluded (``IntDistribution`` with ``step``,
  ``FloatDistribution`` with a float ``step``);
- anything else is fixed: it is passed to every trial as it is written (``optimizer.lr=0.1`` on the
  command line takes the learning rate out of the search).
"""

import json
import math
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

from dml_bench.runtime.errors import UserError


def parse_space(params: dict, arguments: list[str]) -> tuple[dict, dict]:
    """(distributions by key, fixed overrides by key) of ``params`` (``key: sweep``) then ``arguments``."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    distributions, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return distributions, fixed


def distribution(override: Override):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        if value.shuffle:
            raise UserError(f"{override.input_line}: shuffle() has no meaning in a search; give choice(...)")
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep) and not value.shuffle:
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            last = start + step * (math.ceil((stop - start) / step) - 1)
            return FloatDistribution(start, last, step=step)
        return IntDistribution(int(start), int(start + step * ((stop - start - 1) // step)), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise UserError(f"{override.input_line}: a search takes choice(...), interval(a, b), tag(log, interval(a, b)) "
                    "and range(start, stop[, step]) (docs/comparisons.md)")


def override_value(value) -> str:
    """A sampled value as an override's right-hand side: quoted where Hydra's grammar needs it."""
    text = str(value)
    if isinstance(value, str) and not re.fullmatch(r"[\w./-]+", text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def describe(distributions: dict) -> dict:
    """Each distribution as plain data (``search.yaml`` in the sweep folder, and the resume check)."""
    from optuna.distributions import distribution_to_json

    return {key: json.loads(distribution_to_json(d)) for key, d in distributions.items()}
