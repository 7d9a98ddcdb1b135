"""Typed checks of the composed config: a mistyped or impossible value is one line naming the key, the
value and what the key takes, before any work, not a library's traceback minutes later.

Hydra parses command-line values by their look (`trainer.max_epochs=abc` is the string 'abc'), and the
YAML files hold no types, so the values that reach Lightning, PyTorch and lightyard are checked here
against one table. Keys a run's config does not have are skipped (`distill.*` without distillation is
still checked: a wrong value there is wrong wherever it is used).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lightyard.errors import UserError
from lightyard.registry.stages import STAGES

PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "bf16",
    "16",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
_ABSENT = object()


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    accepts: Callable[[Any], bool]
    takes: str  # what the key takes, for the message
    nullable: bool = False


def whole(key: str, least: int, takes: str | None = None, nullable: bool = False) -> Rule:
    return Rule(key, lambda v: _whole(v) and v >= least, takes or f"a whole number ≥ {least}", nullable)


def number(key: str, low: float, high: float | None = None, low_open: bool = False, high_open: bool = True,
           nullable: bool = False) -> Rule:  # fmt: skip
    def accepts(value: Any) -> bool:
        if not _number(value):
            return False
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    bounds = f"{'>' if low_open else '≥'} {low:g}"
    if high is not None:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Rule(key, accepts, f"a number {bounds}", nullable)


def one_of(key: str, choices: tuple, nullable: bool = False) -> Rule:
    return Rule(
        key, lambda v: str(v) in {str(c) for c in choices}, f"one of {', '.join(map(str, choices))}", nullable
    )


def flag(key: str, nullable: bool = False) -> Rule:
    """A switch: YAML's true/false, never a word that merely looks like one (`flase` would be truthy)."""
    return Rule(key, lambda v: isinstance(v, bool), "true or false", nullable)


def _devices(value: Any) -> bool:
    if isinstance(value, str):
        return value == "auto" or all(part.strip().isdigit() for part in value.split(",") if part.strip())
    if _whole(value):
        return value >= 1 or value == -1
    return isinstance(value, list | tuple) and bool(value) and all(_whole(d) and d >= 0 for d in value)


def _batches(value: Any) -> bool:
    """Lightning's `limit_*_batches`/`overfit_batches`: a whole number of batches or a fraction."""
    return (_whole(value) and value >= 0) or (isinstance(value, float) and 0 <= value <= 1)


def _interval(value: Any) -> bool:
    """`val_check_interval`: every N training batches, or a fraction of an epoch."""
    return (_whole(value) and value >= 1) or (isinstance(value, float) and 0 < value <= 1)


BATCHES = "a whole number of batches ≥ 0 or a fraction in [0, 1]"
TRAINER_FLAGS = ("inference_mode", "detect_anomaly", "barebones", "use_distributed_sampler", "sync_batchnorm",
                 "enable_autolog_hparams")  # fmt: skip
TRAINER_SWITCHES = (
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "benchmark",
)  # or null

RULES = (
    flag("train"),
    flag("test"),
    Rule(
        "trainer.max_epochs",
        lambda v: _whole(v) and (v >= 1 or v == -1),
        "a whole number ≥ 1 (-1: no limit)",
        nullable=True,
    ),
    whole("trainer.min_epochs", 0, nullable=True),
    whole("trainer.num_nodes", 1),
    Rule("trainer.devices", _devices, "a whole number ≥ 1, -1 (all), 'auto' or a list of device indices"),
    one_of("trainer.accelerator", ACCELERATORS),
    one_of("trainer.precision", PRECISIONS),
    whole("trainer.accumulate_grad_batches", 1),
    whole("trainer.check_val_every_n_epoch", 1, nullable=True),
    whole("trainer.log_every_n_steps", 1, nullable=True),
    number("trainer.gradient_clip_val", 0, nullable=True),
    Rule(
        "trainer.deterministic", lambda v: isinstance(v, bool) or v == "warn", "true, false or 'warn'", True
    ),
    *(flag(f"trainer.{name}") for name in TRAINER_FLAGS),
    *(flag(f"trainer.{name}", nullable=True) for name in TRAINER_SWITCHES),
    whole("trainer.max_steps", -1, "a whole number ≥ -1 (-1: no limit)"),
    whole("trainer.min_steps", 0, nullable=True),
    Rule("trainer.max_time", lambda v: isinstance(v, str) and v.count(":") == 3, "DD:HH:MM:SS", True),
    Rule("trainer.fast_dev_run", lambda v: isinstance(v, bool) or (_whole(v) and v >= 0), "true, false or N"),
    *(
        Rule(f"trainer.limit_{loop}_batches", _batches, BATCHES, True)
        for loop in ("train", "val", "test", "predict")
    ),
    Rule("trainer.overfit_batches", _batches, BATCHES),
    Rule(
        "trainer.val_check_interval", _interval, "a whole number of batches ≥ 1 or a fraction in (0, 1]", True
    ),
    whole("trainer.num_sanity_val_steps", -1, "a whole number ≥ -1 (-1: all)", nullable=True),
    whole("trainer.reload_dataloaders_every_n_epochs", 0),
    one_of("trainer.gradient_clip_algorithm", ("norm", "value"), nullable=True),
    one_of("trainer.profiler", ("simple", "advanced", "pytorch", "xla"), nullable=True),
    Rule("trainer.strategy", lambda v: isinstance(v, str), "a strategy name (auto, ddp, ddp_spawn, fsdp, …)"),
    Rule("trainer.model_registry", lambda v: isinstance(v, str), "a model name", True),
    whole("data.batch_size", 1),
    whole("data.num_workers", 0),
    whole("data.image_size", 1),
    one_of("data.channels", (1, 3)),
    number("data.val_fraction", 0, 1),
    number("data.test_fraction", 0, 1),
    whole("data.split_seed", 0),
    whole("data.train_size", 1, nullable=True),
    flag("data.download"),
    flag("data.skip_bad_images"),
    flag("data.pin_memory"),
    number("model.optimizer.lr", 0, low_open=True),
    number("model.optimizer.weight_decay", 0),
    number("model.optimizer.momentum", 0, 1),
    number("model.label_smoothing", 0, 1),
    number("model.net.dropout", 0, 1),
    whole("model.net.width", 1),
    whole("callbacks.early_stopping.patience", 0),
    number("callbacks.early_stopping.min_delta", 0),
    number("distill.temperature", 0, low_open=True),
    number("distill.alpha", 0, 1, high_open=False),
    number("prune.amount", 0, 1, low_open=True),
    whole("prune.steps", 1),
    whole("prune.start_epoch", 0),
    whole("prune.every", 1),
    Rule("prune.max_drop", _number, "a number of accuracy points (negative: the model must gain)"),
    flag("prune.lottery_ticket"),
    one_of("quantize.mode", ("static", "dynamic")),
    whole("quantize.calibration_batches", 1),
    Rule("quantize.max_drop", _number, "a number of accuracy points (negative: the model must gain)"),
    number("export.atol", 0, low_open=True),
    whole("export.images", 1),
    whole("export.opset", 7, nullable=True),
    flag("export.enabled"),
    flag("register.enabled"),
    one_of("register.stage", STAGES, nullable=True),
    whole("seed", 0, nullable=True),
)


def check_config(cfg: DictConfig) -> None:
    """Raise a `UserError` for the first value of `cfg` that its rule refuses."""
    for rule in RULES:
        try:
            value = OmegaConf.select(cfg, rule.key, default=_ABSENT, throw_on_missing=False)
        except InterpolationResolutionError:
            continue  # `${hydra:...}` in train.py's check before Hydra runs: train(cfg) checks it again
        if value is _ABSENT or (value is None and rule.nullable) or rule.accepts(value):
            continue
        raise UserError(f"{rule.key}={_shown(value)} is not accepted: {rule.key} takes {rule.takes}")


def _shown(value: Any) -> str:
    """A value as the command line writes it."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, ListConfig | list | tuple):
        return f"[{', '.join(_shown(item) for item in value)}]"
    return str(value)
