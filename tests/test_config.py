"""Every file under conf/ composes, resolves, and instantiates into the objects train() uses."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from lightyard.config import check_group_overrides, check_overrides, instantiate_all
from lightyard.errors import UserError
from lightyard.validation import check_config
from tests.conftest import CONF_DIR, compose_train

GROUPS = ["data", "model", "model/net", "callbacks", "logger", "trainer", "paths", "hydra", "debug"]
GLOBAL_GROUPS = ["experiment", "hparams_search", "hydra/launcher", "hydra/sweeper"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def every_override() -> list[str]:
    overrides = [f"{group}={name}" for group in GROUPS + GLOBAL_GROUPS for name in options(group)]
    return [o for o in overrides if not o.startswith(("hydra=", "paths="))]


def test_every_config_file_is_covered() -> None:
    files = {str(p.relative_to(CONF_DIR).with_suffix("")) for p in CONF_DIR.rglob("*.yaml")}
    covered = {o.replace("=", "/") for o in every_override()}
    covered |= {"train", "hydra/default", "paths/default", "serve"}  # serve: test_serve_config_is_complete
    assert files <= covered, f"not composed by any test: {sorted(files - covered)}"


@pytest.mark.parametrize("override", every_override())
def test_composes_and_resolves(override: str, tmp_path: Path) -> None:
    extra = ["model.net.name=resnet18"] if override == "model/net=torchvision" else []
    composed = compose_train([override, *extra], tmp_path)
    check_config(composed)  # every shipped option passes the typed checks
    cfg = OmegaConf.to_container(composed, resolve=True)
    assert cfg["trainer"]["_target_"] == "lightning.pytorch.Trainer"
    assert cfg["paths"]["output_dir"] == str(tmp_path)
    if override.startswith("hydra/launcher="):  # launcher configs live under the hydra node
        launcher = compose_train([override], tmp_path, keep_hydra=True).hydra.launcher
        assert OmegaConf.to_container(launcher, resolve=True)["submitit_folder"].startswith(str(tmp_path))


@pytest.mark.parametrize("name", options("data"))
def test_data_configs_instantiate_with_a_spec(name: str, tmp_path: Path) -> None:
    cfg = compose_train([f"data={name}", f"data.root={tmp_path}"] if name != "digits" else [], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    if name == "imagefolder":  # needs class folders to know its classes
        for cls in ("a", "b"):
            (tmp_path / cls).mkdir()
            (tmp_path / cls / "x.png").write_bytes(b"")
    spec = datamodule.spec
    assert spec.num_classes >= 2 and spec.channels in (1, 3)


@pytest.mark.parametrize("name", [n for n in options("model/net") if n != "torchvision"])
def test_net_configs_build_for_digits_and_rgb(name: str, tmp_path: Path) -> None:
    cfg = compose_train([f"model/net={name}"], tmp_path)
    factory = hydra.utils.instantiate(cfg.model.net)
    for channels, size, classes in ((1, 8, 10), (3, 32, 7)):
        net = factory(num_classes=classes, in_channels=channels).eval()
        with torch.no_grad():
            assert net(torch.randn(2, channels, size, size)).shape == (2, classes)


def test_default_callbacks_and_logger(tmp_path: Path) -> None:
    cfg = compose_train(["logger=many", "callbacks=[default,early_stopping]"], tmp_path)
    callbacks = {type(c).__name__ for c in instantiate_all(cfg.callbacks)}
    assert {"ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "RichProgressBar"} <= callbacks
    assert {"RichModelSummary", "PredictionSamples"} <= callbacks
    assert {type(lg).__name__ for lg in instantiate_all(cfg.logger)} == {"TensorBoardLogger", "CSVLogger"}


def test_slurm_launcher_follows_the_trainer(tmp_path: Path) -> None:
    overrides = ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    cfg = compose_train(overrides, tmp_path, keep_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    on_cpu = compose_train([*overrides, "trainer.accelerator=cpu"], tmp_path, keep_hydra=True).hydra.launcher
    assert (on_cpu.tasks_per_node, on_cpu.gpus_per_node) == (4, 0)  # CPU nodes may have no GPU to give


def test_optuna_search_space(tmp_path: Path) -> None:
    cfg = compose_train(["hparams_search=optuna"], tmp_path, keep_hydra=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(cfg.hydra.sweeper.params) == {"model.optimizer.lr", "model.net.width", "data.batch_size"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=foo"], "unknown data option 'foo': choose one of cifar10, digits"),
        (["model/net=resnet19"], "unknown model/net option 'resnet19'"),
        (["-m", "trainer=cpu,tpu"], "unknown trainer option 'tpu'"),
        (["callbacks=[default,nope]"], "unknown callbacks option 'nope'"),
        (
            ["-m", "hydra/launcher=slurm"],
            "unknown hydra/launcher option 'slurm': choose one of basic, submitit_local",
        ),
    ],
)
def test_unknown_group_options_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_group_overrides(overrides, CONF_DIR)


def test_valid_overrides_pass_the_check() -> None:
    check_group_overrides(
        ["data=cifar10", "model/net=resnet18", "callbacks=[default,early_stopping]", "trainer.devices=2",
         "hydra/launcher=submitit_local", "experiment=cifar10_resnet18", "debug=null"],
        CONF_DIR,
    )  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        ["hparams_search=optuna", "data.batch_size=32,64"],  # a sweep without -m: the config runs it as one
        ["--cfg", "job", "trainer.max_epochs=3"],  # Hydra's flags and their arguments
        ["-m", "model.optimizer.lr=0.1,0.01"],
        ["hydra.run.dir=/tmp/run", "+extra=1", "experiment=mnist", "data.download=false"],
    ],
)
def test_the_key_check_leaves_what_only_a_run_knows_to_hydra(overrides: list[str]) -> None:
    check_overrides(overrides, CONF_DIR)


def test_the_key_check_names_the_nearest_key() -> None:
    with pytest.raises(UserError, match=r"^trainer.max_epoch is not a setting of this config: did you mean "):
        check_overrides(["trainer.max_epoch=3"], CONF_DIR)


def test_serve_config_is_complete() -> None:
    """conf/serve.yaml sets every serving setting, and the defaults it states are the code's."""
    from dataclasses import asdict

    from lightyard.serving.settings import CONFIG, ServingSettings

    stated = OmegaConf.to_container(OmegaConf.load(CONFIG))
    assert stated == asdict(ServingSettings())
    assert ServingSettings.load(CONFIG, environ={}) == ServingSettings()


# lightyard's own choices where conf/trainer/default.yaml differs from Lightning's defaults
TRAINER_CHOICES = {
    "default_root_dir": "${paths.output_dir}",  # the run dir
    "devices": 1,  # one process unless asked: `trainer.devices=N` is DDP
    "precision": "32-true",
    "max_epochs": 30,
    "min_epochs": 1,
    "log_every_n_steps": 10,  # digits has 20 steps per epoch: Lightning's 50 would log none
    "deterministic": False,
}


def test_every_trainer_argument_is_a_checked_setting() -> None:
    """`trainer.NAME=value` works for every argument of the installed Lightning's Trainer (the config
    lists them all, at Lightning's default unless lightyard chose otherwise) and each is type-checked."""
    import inspect

    import lightning

    from lightyard.validation import RULES

    parameters = inspect.signature(lightning.Trainer.__init__).parameters
    names = [name for name in parameters if name not in ("self", "logger", "callbacks", "plugins")]
    listed = OmegaConf.load(CONF_DIR / "trainer" / "default.yaml")
    assert sorted(set(listed) - {"_target_"}) == sorted(names)
    for name in names:
        expected = TRAINER_CHOICES.get(name, parameters[name].default)
        assert listed._get_node(name)._value() == expected, name  # as written: no interpolation resolved
    checked = {rule.key for rule in RULES}
    assert [name for name in names if f"trainer.{name}" not in checked] == ["default_root_dir"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.limit_train_batches=abc", "trainer.limit_train_batches takes a whole number of batches"),
        ("trainer.val_check_interval=0", "takes a whole number of batches ≥ 1 or a fraction in (0, 1]"),
        ("trainer.gradient_clip_algorithm=max", "takes one of norm, value"),
        ("trainer.limit_val_batch=3", "did you mean trainer.limit_val_batches?"),
    ],
)
def test_a_trainer_argument_of_the_wrong_type_is_one_line(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        check_overrides([override], CONF_DIR)
