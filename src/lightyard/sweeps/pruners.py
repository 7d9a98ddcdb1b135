"""The pruners a sweep can use, by name (`hydra.sweeper.pruner=median`) or as a `_target_` mapping.

The sweeper and every trial build the same pruner from the same setting: a trial asks it, through the
study's database, whether to stop after each validation epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightyard.errors import UserError

# Defaults for short trials: no verdict before 3 trials have reported, nor on a trial's first epoch.
PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "median": ("optuna.pruners.MedianPruner", {"n_startup_trials": 3, "n_warmup_steps": 1}),
    "successive_halving": ("optuna.pruners.SuccessiveHalvingPruner", {"min_resource": 1}),
    "hyperband": ("optuna.pruners.HyperbandPruner", {"min_resource": 1}),
    "none": ("optuna.pruners.NopPruner", {}),
}


def check_pruner(setting: str | Mapping[str, Any] | None) -> None:
    """One line before any trial for a pruner name that does not exist."""
    if setting is None or isinstance(setting, Mapping):
        return
    if str(setting) not in PRUNERS:
        raise UserError(
            f"unknown pruner '{setting}': set hydra.sweeper.pruner to one of {', '.join(PRUNERS)} "
            "or to a mapping with a _target_"
        )


def build_pruner(setting: str | Mapping[str, Any] | None) -> Any:
    """An Optuna pruner; `None` and `none` prune nothing."""
    from hydra.utils import get_class

    check_pruner(setting)
    if isinstance(setting, Mapping):
        options = dict(setting)
        target = options.pop("_target_", None)
        if not target:
            raise UserError(
                "hydra.sweeper.pruner: a mapping needs a _target_ (e.g. optuna.pruners.MedianPruner)"
            )
    else:
        target, options = PRUNERS[str(setting or "none")]
    try:
        return get_class(target)(**options)
    except Exception as err:  # a bad class name or argument: the user's setting
        raise UserError(f"hydra.sweeper.pruner: cannot build {target}({options}): {err}") from None
