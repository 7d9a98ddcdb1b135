"""`train(cfg)`: the whole training run as a plain function that returns its metrics.

Builds the data module, network, LightningModule, callbacks, loggers and Trainer from the Hydra config,
fits, tests the best checkpoint, exports and verifies it (ExportCallback), writes `metrics.json` and
registers the verified artifacts. Files are written and messages printed on rank zero only. Inside an
Optuna sweep (`cfg.optuna.trial` set by the sweeper) it also reports to the study after every validation
epoch, skips testing and export once the pruner stops it, and leaves registration to the sweep, which
registers its best trial only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lightyard.callbacks import ExportCallback
from lightyard.callbacks.compression import CompressionReport, CompressionStep, PruningStep
from lightyard.callbacks.quantize import QuantizeCallback
from lightyard.config import build_trainer, instantiate, instantiate_all
from lightyard.data import ImageDataModule
from lightyard.export.manifest import ExportReport
from lightyard.io import write_json_atomic
from lightyard.models import build_net
from lightyard.models.checkpoints import check_fits, net_state_dict, read_checkpoint
from lightyard.models.nets import PRUNED_CHANNELS
from lightyard.models.surgery import fit_channels
from lightyard.registry import register_run
from lightyard.registry.store import check_model_name
from lightyard.sources import load_trained_net
from lightyard.sweeps.study import REGISTRATION_FILE, redact
from lightyard.tracking.loggers import log_hparams
from lightyard.validation import check_config

METRICS_FILE = "metrics.json"
log = logging.getLogger("lightyard")  # Hydra sends it to the console and <run>/train.log


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one model; returns the final metrics (`test/acc`, `val/acc_best`, …)."""
    check_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule: ImageDataModule = instantiate(cfg.data)
    spec = datamodule.spec
    net = build_net(cfg.model.net, spec)
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    # net_config is passed after instantiation: Hydra would instantiate a dict that holds a `_target_`
    module = instantiate(cfg.model, net=net, preprocess=spec.to_dict(), _partial_=True, _convert_="all")
    model = module(net_config=net_config, **_teacher(cfg))
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path") or _interrupted_run(output_dir)
    if ckpt_path:
        _check_checkpoint(model, ckpt_path)

    callbacks = instantiate_all(cfg.get("callbacks"))
    for step in callbacks:
        if isinstance(step, PruningStep) and step.parent:
            step.parent_net = load_trained_net(step.parent)
    reporter = _trial_reporter(cfg)
    callbacks += [reporter] if reporter else []
    exporter = _exporter(cfg)
    callbacks = _in_pipeline_order(callbacks, exporter, output_dir)
    compression = [callback for callback in callbacks if isinstance(callback, CompressionStep)]
    registering = _registering(cfg, exporter)
    trainer = build_trainer(cfg.trainer, callbacks, instantiate_all(cfg.get("logger")))
    _say(f"run dir: {output_dir}" + (f", resuming from {ckpt_path}" if ckpt_path else ""))
    if trainer.world_size > 1:  # which launcher's environment Lightning found (SLURM, torchrun, its own)
        environment = type(getattr(trainer.strategy, "cluster_environment", None)).__name__
        _say(
            f"distributed: {environment}, world size {trainer.world_size} = {trainer.num_nodes} node(s) × "
            f"{trainer.num_devices} device(s)"
        )

    training = cfg.get("train", True)
    if training:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = _as_floats(trainer.callback_metrics)
    pruned = reporter.pruned_epoch() if reporter else None
    testing = cfg.get("test", True)
    if pruned is not None:
        _say(f"trial {cfg.optuna.trial} was pruned after epoch {pruned}: not tested, exported or registered")
        testing, exporter, registering = False, None, False

    if testing:
        # After training: the best epoch (or the current weights); with train=false: the given checkpoint.
        best = _tested_checkpoint(trainer, training, ckpt_path)
        _say(f"testing {'checkpoint ' + str(best) if best else 'current weights'}")
        trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=trainer.is_global_zero)
        metrics.update(_as_floats(trainer.callback_metrics))

    log_hparams(trainer, OmegaConf.to_container(cfg, resolve=True), metrics)
    if trainer.is_global_zero:
        write_json_atomic(output_dir / METRICS_FILE, metrics)
        _report(output_dir, metrics, cfg.get("optimized_metric"))
        if exporter:
            # read from disk: under ddp_spawn the export ran in a worker process
            passed = ", ".join(ExportReport.load(exporter.dirpath).passed) or "no format"
            _say(f"exported to {exporter.dirpath}/: {passed} passed their gates")
        refusals = [reason for step in compression if (reason := step.refusal())]
        for reason in refusals:
            _say(f"not registered: {reason}")
        if registering and not refusals:
            checkpoint = _tested_checkpoint(trainer, training, ckpt_path)
            _register(cfg, exporter, model, compression, metrics, checkpoint)
    return metrics


def _teacher(cfg: DictConfig) -> dict:
    """A distillation model's teacher, loaded here (registry tag or checkpoint) and handed to the module."""
    if "teacher" not in cfg.model:
        return {}
    return {"teacher": load_trained_net(cfg.model.teacher) if cfg.model.teacher else None}


def _check_checkpoint(model: L.LightningModule, ckpt_path: str | Path) -> None:
    """Refuse a checkpoint of another architecture before any work; a checkpoint of a structurally
    pruned network resizes the layers to its own sizes first."""
    checkpoint = read_checkpoint(ckpt_path)
    state = net_state_dict(checkpoint)
    if checkpoint.get("hyper_parameters", {}).get("net_config", {}).get(PRUNED_CHANNELS):
        fit_channels(model.net, state)
        model.hparams.net_config[PRUNED_CHANNELS] = True
    check_fits(model.net, state, ckpt_path)


def _in_pipeline_order(
    callbacks: list[L.Callback], exporter: ExportCallback | None, output_dir: Path
) -> list[L.Callback]:
    """Training callbacks first, then what acts on the tested weights in pipeline order: export,
    quantization (which starts from the exported ONNX model), and the compression report of it all."""
    quantizers = [callback for callback in callbacks if isinstance(callback, QuantizeCallback)]
    ordered = [callback for callback in callbacks if not isinstance(callback, QuantizeCallback)]
    ordered += ([exporter] if exporter else []) + quantizers
    if any(isinstance(callback, CompressionStep) for callback in callbacks):
        export_dir = exporter.dirpath if exporter else (quantizers[0].dirpath if quantizers else None)
        ordered.append(CompressionReport(output_dir, export_dir or output_dir / "export"))
    return ordered


def _exporter(cfg: DictConfig) -> ExportCallback | None:
    """The export step, checked before training so a wrong option fails in seconds, not after the run."""
    export = cfg.get("export")
    if not export or not export.enabled:
        return None
    if not cfg.get("test", True):
        _say("export skipped: it exports the tested weights, and test=false")
        return None
    return ExportCallback(export.dir, list(export.formats), export.opset, export.atol, export.images)


def _trial_number(cfg: DictConfig) -> int | None:
    """This run's trial number when an Optuna sweep runs it (`conf/hparams_search/optuna.yaml`)."""
    optuna = cfg.get("optuna")
    return None if not optuna or optuna.get("trial") is None else int(optuna.trial)


def _trial_reporter(cfg: DictConfig) -> L.Callback | None:
    """The callback that reports a sweep trial's metric to its study and prunes it (None outside one)."""
    number = _trial_number(cfg)
    if number is None:
        return None
    from lightyard.sweeps.reporter import TrialReporter

    pruner = cfg.optuna.get("pruner")
    pruner = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else pruner
    return TrialReporter(cfg.optuna.storage, cfg.optuna.study_name, number, cfg.optimized_metric, pruner)


def _registering(cfg: DictConfig, exporter: ExportCallback | None) -> bool:
    register = cfg.get("register")
    if not register or not register.enabled:
        return False
    if exporter is None:
        _say("registration skipped: it registers the exported artifacts, and export is off")
        return False
    check_model_name(register.name)
    return True


def _register(
    cfg: DictConfig,
    exporter: ExportCallback,
    model: L.LightningModule,
    compression: list[CompressionStep],
    metrics: dict,
    checkpoint: str | None,
) -> None:
    lineage = model.lineage()
    where = {"run_dir": str(cfg.paths.output_dir), "checkpoint": str(checkpoint)}
    lineage["steps"] = [{**step, **where} for step in lineage["steps"]]
    lineage["steps"] += [step.lineage_step() for step in compression]
    lineage["parents"] += [parent for step in compression for parent in step.parents]
    record = {
        "export_dir": str(exporter.dirpath),
        "name": cfg.register.name,
        "stage": cfg.register.stage,
        "metrics": metrics,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "lineage": lineage,
    }
    if _trial_number(cfg) is not None:
        record["config"]["optuna"]["storage"] = redact(cfg.optuna.storage)  # the registry keeps no password
        path = write_json_atomic(Path(cfg.paths.output_dir) / REGISTRATION_FILE, record)
        _say(f"registration left to the sweep, which registers its best trial ({path.name})")
        return
    _say(register_run(record))


def _interrupted_run(output_dir: Path) -> Path | None:
    """`last.ckpt` of a run dir that already has one: rerunning into it (SLURM requeue, `hydra.run.dir=`
    after a crash) continues that run instead of starting over."""
    last = output_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def _tested_checkpoint(trainer: L.Trainer, training: bool, ckpt_path: str | None) -> str | None:
    return _best_checkpoint(trainer) if training else ckpt_path


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """The path the monitoring checkpoint callback chose (not `last.ckpt`), if training saved one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def _as_floats(metrics: dict) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if "/" in name}


@rank_zero_only
def _say(message: str) -> None:
    log.info(message)


def _report(output_dir: Path, metrics: dict[str, float], optimized: str | None) -> None:
    shown = [name for name in ("test/acc", "val/acc_best", optimized) if name and name in metrics]
    summary = ", ".join(f"{name}={metrics[name]:.4f}" for name in dict.fromkeys(shown))
    _say(summary or "no metrics (train=false and test=false?)")
    _say(
        f"results in {output_dir}/: {METRICS_FILE}, checkpoints/, tensorboard/ "
        f"(tensorboard --logdir {output_dir.parent})"
    )
