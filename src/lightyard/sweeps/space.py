"""Hydra's sweep syntax as an Optuna search space, so `hparams_search` configs and command lines keep
the grammar users know: `interval(a, b)`, `tag(log, interval(a, b))`, `tag(int, interval(a, b))`,
`range(start, stop[, step])`, `choice(a, b, …)` and `a,b,c`. A plain value is fixed in every trial."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException

from lightyard.errors import UserError

GRAMMAR = "interval(low, high), tag(log, interval(low, high)), range(start, stop[, step]) or choice(a, b)"


@dataclass
class SearchSpace:
    """Optuna distributions by Hydra key, and the overrides every trial shares."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The command-line overrides of one trial: the fixed ones, then its sampled values."""
        return [*self.fixed, *(f"{key}={as_override(value)}" for key, value in params.items())]

    def first_point(self) -> dict[str, Any]:
        """One value of every dimension: enough to check that the keys exist before any trial."""
        return {key: _some_value(dist) for key, dist in self.distributions.items()}


def parse_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """The space of `hydra.sweeper.params` and the command line's sweep overrides; the command line's
    other overrides are the fixed part. The command line wins: a value given there is not searched. A
    null expression drops a key, so that a search config can extend another for a net without that key."""
    parser = OverridesParser.create()
    space = SearchSpace()
    for key, expression in (params or {}).items():
        if expression is None:
            continue
        override = parse_override(f"{key}={expression}", f"hydra.sweeper.params.{key}", parser)
        space.distributions[override.get_key_element()] = _distribution(
            override, f"hydra.sweeper.params.{key}"
        )
    for argument in arguments:
        override = parse_override(argument, argument, parser)
        if override.is_sweep_override():
            space.distributions[override.get_key_element()] = _distribution(override, argument)
        else:  # a value given on the command line is fixed, even for a key the params search
            space.distributions.pop(override.get_key_element(), None)
            space.fixed.append(argument)
    return space


def parse_override(text: str, where: str, parser: OverridesParser | None = None) -> Override:
    """One override, or one line naming it and the sweep grammar when Hydra cannot read it."""
    parser = parser or OverridesParser.create()
    try:
        return parser.parse_overrides([text])[0]
    except HydraException as err:
        reason = next((line for line in str(err).splitlines() if "while evaluating" in line), "")
        reason = reason.split(": ", 1)[-1] if reason else "not Hydra's sweep syntax"
        raise UserError(
            f"{where}: cannot read '{text.split('=', 1)[1]}' ({reason}): write {GRAMMAR}"
        ) from None


def _distribution(override: Override, where: str) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    tags = getattr(value, "tags", set())
    unknown = set(tags) - {"log", "int"}
    if unknown:
        raise UserError(f"{where}: unknown tag {', '.join(sorted(unknown))}: use tag(log, …) or tag(int, …)")
    if isinstance(value, ChoiceSweep):
        if not value.list:
            raise UserError(f"{where}: choice() needs at least one value: write {GRAMMAR}")
        return CategoricalDistribution(value.list)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if not low < high or ("log" in tags and low <= 0):
            bound = "0 < low < high" if "log" in tags else "low < high"
            raise UserError(f"{where}: interval({low}, {high}) needs {bound}")
        if "int" in tags:
            return IntDistribution(int(low), int(high), log="log" in tags)
        return FloatDistribution(low, high, log="log" in tags)
    if isinstance(value, RangeSweep):
        values = list(_range_values(value))
        if not values:
            raise UserError(f"{where}: range({value.start}, {value.stop}, {value.step}) is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return CategoricalDistribution(values)  # float steps: the listed values exactly, no rounding
    raise UserError(f"{where}: not a search dimension: write {GRAMMAR}")


def _range_values(sweep: RangeSweep) -> list[int | float]:
    values, current = [], sweep.start
    while (sweep.step > 0 and current < sweep.stop) or (sweep.step < 0 and current > sweep.stop):
        values.append(current)
        current = round(current + sweep.step, 12)
    return values


def _some_value(distribution: Any) -> Any:
    return distribution.choices[0] if hasattr(distribution, "choices") else distribution.low


def as_override(value: Any) -> str:
    """A sampled value as Hydra reads it back (strings quoted so that `1e-3` or `null` stay strings)."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)
