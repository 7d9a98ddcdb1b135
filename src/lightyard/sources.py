"""Where a trained model comes from: a checkpoint, the run dir that wrote it, or a registry tag.

One place turns any of them into its network, preprocessing spec and data module, for training (the
distillation teacher, the pruning parent), the CLI (`export`, `quantize`), the benches and the server's
checks alike. Networks are rebuilt from their stored `model.net` config (lightyard's builders only) with
weights read by `weights_only=True`; a registered version's checksums are verified before it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lightyard.errors import UserError
from lightyard.models.loading import TrainedNet, check_compatible, rebuild_net

if TYPE_CHECKING:
    from lightyard.data import ImageDataModule
    from lightyard.data.preprocess import PreprocessSpec
    from lightyard.registry import RegisteredModel

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
TRUSTED_DATA = ("lightyard.data.",)  # the only data modules a stored config may name


@dataclass(frozen=True)
class ModelSource:
    """A trained model with the data it was trained on; `registered` is set for a registry tag,
    `run_dir` for a checkpoint."""

    trained: TrainedNet
    data: dict  # the run's `data` config
    registered: RegisteredModel | None = None
    run_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.trained.source


def is_checkpoint(source: str | Path) -> bool:
    """A path to a checkpoint file rather than a registry reference."""
    path = Path(str(source)).expanduser()
    return path.suffix in CHECKPOINT_SUFFIXES or path.is_file()


def load_trained_net(source: str | Path) -> TrainedNet:
    """`name:version` / `name@stage` from the registry (checksums verified), or a checkpoint path."""
    if is_checkpoint(source):
        return net_from_checkpoint(source)
    from lightyard.registry import load

    model = load(str(source))
    return TrainedNet(model.net(), model.spec, dict(model.metadata["net"]), model.tag)


def open_model(source: str | Path) -> ModelSource:
    """A checkpoint (its data config read from its run dir) or a registry tag (its stored config)."""
    if is_checkpoint(source):
        run_dir = Path(source).resolve().parent.parent
        data = run_config(run_dir, "data")
        if not data:
            raise UserError(f"{source}: its run dir has no .hydra/config.yaml naming the data it trained on")
        trained = net_from_checkpoint(source, run_config(run_dir, "model").get("net"))
        return ModelSource(trained, data, run_dir=run_dir)
    from lightyard.registry import load

    registered = load(str(source))  # checksums verified
    data = registered.config.get("data")
    if not data:
        raise UserError(f"{registered.tag} has no stored data config: use its checkpoint instead")
    trained = TrainedNet(registered.net(), registered.spec, dict(registered.metadata["net"]), registered.tag)
    return ModelSource(trained, data, registered=registered)


def net_from_checkpoint(path: str | Path, run_net_config: dict | None = None) -> TrainedNet:
    """The network of a lightyard checkpoint, in eval mode. `run_net_config` stands in for checkpoints
    written before the net config was stored in them (read from the run's `.hydra/config.yaml`)."""
    from lightyard.data.preprocess import PreprocessSpec
    from lightyard.models.checkpoints import net_state_dict, read_checkpoint

    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if "preprocess" not in hparams:
        raise UserError(f"{path} is not a lightyard checkpoint: it has no preprocessing spec")
    spec = PreprocessSpec.from_dict(hparams["preprocess"])
    net_config = hparams.get("net_config") or run_net_config
    if not net_config:
        raise UserError(f"{path} does not name its network: it predates stored net configs; retrain it")
    net = rebuild_net(net_config, spec, net_state_dict(checkpoint), path)
    return TrainedNet(net, spec, dict(net_config), str(path))


def run_config(run_dir: Path, key: str) -> dict:
    """One top-level key of the config a run dir's `.hydra/config.yaml` stored, unresolved; {} if none."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False).get(key) or {}


def datamodule_from(data: dict, spec: PreprocessSpec | None = None) -> ImageDataModule:
    """The data module a stored `data` config describes, set up for testing. Only lightyard's own data
    modules are accepted (the config may come from the registry); with `spec`, the data must match it."""
    from omegaconf import OmegaConf

    from lightyard.config import instantiate

    target = str(data.get("_target_", ""))
    if not target.startswith(TRUSTED_DATA):
        raise UserError(f"stored data config names '{target}', which is not a lightyard data module")
    datamodule = instantiate(OmegaConf.create(data))
    if spec is not None:
        check_compatible(spec, datamodule.spec, "the model", role="model")
    datamodule.setup("test")
    return datamodule
