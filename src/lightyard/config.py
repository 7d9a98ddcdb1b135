"""Turning Hydra configs into objects, with user mistakes reported as one-line `UserError`s.

Lightning and torch are imported where they are used: `train.py` checks its command line with this module
before importing them, so that a mistake is reported before the seconds those imports take.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from lightyard.errors import UserError
from lightyard.sweeps.space import parse_override
from lightyard.validation import check_config

if TYPE_CHECKING:
    import lightning as L

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def gpus_per_node(accelerator: str, devices: Any) -> int:
    """SLURM's GPUs per node for a trainer (`conf/hydra/launcher/submitit_slurm.yaml`): one per device,
    none when the trainer runs on CPUs, whose nodes may have no GPU to give."""
    return 0 if str(accelerator) == "cpu" else int(devices)


OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node, replace=True)


def compose_train(overrides: Sequence[str], output_dir: Path, keep_hydra: bool = False) -> DictConfig:
    """The config `python train.py OVERRIDES hydra.run.dir=OUTPUT_DIR` runs with, for calling `train(cfg)`
    from Python (benchmarks, tests). `${hydra:...}` resolves as in a real run; as in a real run, the task's
    config has no `hydra` node unless `keep_hydra`."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    paths = [f"paths.root_dir={output_dir}", f"paths.output_dir={output_dir}"]
    cfg = _compose([*paths, *overrides], CONF_DIR, with_hydra=True)
    HydraConfig().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def instantiate(config: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, unwrapping the `UserError` that Hydra wraps in its own exception."""
    try:
        return hydra.utils.instantiate(config, **kwargs)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", "") or "a value"
        raise UserError(f"config value {key} is not set: pass {key}=...") from None
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every `_target_` entry of a group such as `callbacks` or `logger` (entries set to null are skipped)."""
    if not group:
        return []
    return [
        instantiate(entry)
        for entry in group.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def check_devices(trainer_cfg: DictConfig) -> None:
    """Refuse what this machine cannot run before Lightning does so with a traceback."""
    import torch

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", 1)
    available = torch.cuda.device_count()
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and available == 0)
    several = not isinstance(devices, int) or devices != 1
    if on_cpu and several and trainer_cfg.get("sync_batchnorm"):
        raise UserError(
            "trainer.sync_batchnorm=true needs CUDA GPUs: set trainer.sync_batchnorm=false on CPU"
        )
    if accelerator not in ("gpu", "cuda") or not isinstance(devices, int) or devices < 1:
        return
    if devices > available:
        fix = f"trainer.devices={available}" if available else "trainer=cpu"
        raise UserError(f"{devices} GPU(s) requested but this machine has {available}: use {fix}")


def build_trainer(trainer_cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor

    check_devices(trainer_cfg)
    if not loggers:  # logger=none: there is nowhere to monitor the learning rate to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    try:
        return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    except InstantiationException as err:
        if err.__cause__ is not None and type(err.__cause__).__name__ == "MisconfigurationException":
            first = str(err.__cause__).strip().splitlines()[0]
            raise UserError(f"trainer: {first} (check trainer.accelerator / trainer.devices)") from None
        raise


_GROUP_OVERRIDE = re.compile(r"^[~+]{0,2}(?P<group>[A-Za-z_][\w/]*)=(?P<value>.*)$")


def check_overrides(overrides: Sequence[str], conf_dir: Path) -> None:
    """Command-line mistakes, in one line and before anything is imported or created: an unknown group
    option and a key the config does not have (`trainer.max_epoch=3`), which Hydra reports as multi-line
    composition errors, and a value its key does not take (`lightyard.validation`). The command line is
    composed once here for that (cheap beside the imports); any other composition problem is left to
    Hydra, which knows what only a run can (a sweep's values, `--cfg`, `--config-name`)."""
    check_group_overrides(overrides, conf_dir)
    for override in overrides:
        if override.startswith("-") or "=" not in override:  # Hydra's flags and their arguments
            continue
        parsed = parse_override(override, override)
        key = parsed.get_key_element().lstrip("+~")
        if parsed.is_sweep_override() and key.startswith("hydra."):
            dimension = key.rsplit("hydra.sweeper.params.", 1)[-1]
            raise UserError(
                f"{override}: Hydra's own settings take one value; quote a search dimension "
                f"({key}='{override.split('=', 1)[1]}') or give it as {dimension}=..."
            )
    if any(arg.startswith("-") for arg in overrides):
        return  # Hydra's own flags (-m, --cfg job, --config-name NAME, ...): its arguments are not overrides
    plain = [arg for arg in overrides if not arg.lstrip("+~").startswith("hydra")]
    try:
        cfg = _compose(plain, conf_dir)
    except ConfigCompositionException as err:
        if problem := _unknown_key(err, plain, conf_dir):
            raise UserError(problem) from None
        return
    check_config(cfg)


def _compose(overrides: Sequence[str], conf_dir: Path, with_hydra: bool = False) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=with_hydra)


def _unknown_key(err: ConfigCompositionException, overrides: Sequence[str], conf_dir: Path) -> str | None:
    """For an override of a key the config lacks: one line naming it, the nearest existing key and how to
    add a new one. None for any other composition error."""
    missing = getattr(err.__cause__, "full_key", None)  # the first node of the key that does not exist
    keys = {o.split("=", 1)[0]: o for o in overrides}
    key = next((k for k in keys if missing and (k == missing or k.startswith(f"{missing}."))), None)
    if not (isinstance(err.__cause__, ConfigKeyError | ConfigAttributeError) and key):
        return None
    override = keys[key]
    parent, _, name = missing.rpartition(".")
    try:  # the config as it would be without this override, for the names next to the missing one
        others = _compose([o for o in overrides if o != override], conf_dir)
    except ConfigCompositionException:  # another override is wrong too: it gets its turn on the next run
        others = OmegaConf.create()
    node = OmegaConf.select(others, parent) if parent else others
    close = difflib.get_close_matches(name, list(node.keys()) if isinstance(node, DictConfig) else [], 1)
    hint = f": did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    return f"{key} is not a setting of this config{hint} (to add a new key: +{override})"


def check_group_overrides(overrides: Sequence[str], conf_dir: Path) -> None:
    """Name the valid options when a command line picks a config group option that does not exist.

    Hydra reports this as a multi-line composition error; this check runs first and says it in one line.
    """
    for override in overrides:
        match = _GROUP_OVERRIDE.match(override)
        if not match or "." in match["group"]:
            continue
        group = match["group"]
        options = group_options(group, conf_dir)
        if not options:
            continue  # not a config group: a plain key, left to Hydra
        for choice in _choices(match["value"]):
            if choice not in options and choice not in ("null", "none", ""):
                raise UserError(
                    f"unknown {group} option '{choice}': choose one of {', '.join(sorted(options))}"
                )


def group_options(group: str, conf_dir: Path) -> set[str]:
    """Options of a config group: files under conf/, plus Hydra's and its plugins' for `hydra/...` groups."""
    options = {p.stem for p in (conf_dir / group).glob("*.yaml")}
    if group.startswith("hydra/"):
        from hydra.core.config_store import ConfigStore
        from hydra.core.plugins import Plugins

        Plugins.instance()  # registers the installed plugins' configs (launchers, sweepers)
        stored = ConfigStore.instance().repo
        for part in group.split("/"):
            stored = stored.get(part, {}) if isinstance(stored, dict) else {}
        options |= {name.removesuffix(".yaml") for name in stored if name.endswith(".yaml")}
        builtin = resources.files("hydra.conf").joinpath(group)
        if builtin.is_dir():
            options |= {e.name.removesuffix(".yaml") for e in builtin.iterdir() if e.name.endswith(".yaml")}
    return options


def _choices(value: str) -> list[str]:
    """Option names in `a`, `a,b` (a sweep) or `[a,b]` (a list); sweep functions are left to Hydra."""
    if "(" in value:
        return []
    return [part.strip() for part in value.strip("[]").split(",") if part.strip()]
