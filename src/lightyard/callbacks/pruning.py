"""Pruning callbacks: iterative global L1 unstructured pruning (Lightning's `ModelPruning`) and structured
channel removal, each followed by fine-tuning within the same run."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelPruning

from lightyard.callbacks.best_checkpoint import BestCheckpoint
from lightyard.callbacks.compression import PruningStep
from lightyard.compress.gate import DEFAULT_MAX_DROP
from lightyard.compress.pruning import PRUNABLE, per_step_amount, prune_channels, restore_masks, sparsity
from lightyard.errors import UserError
from lightyard.export.exporter import cpu_float_copy
from lightyard.models.checkpoints import check_fits
from lightyard.models.loading import TrainedNet, check_compatible
from lightyard.models.nets import PRUNED_CHANNELS
from lightyard.tracking.loggers import log_scalars

log = logging.getLogger("lightyard")


def _load_parent(step: PruningStep, pl_module: L.LightningModule) -> str:
    """Start from the weights of the trained model `train()` loaded for `step.parent`; returns its source."""
    trained: TrainedNet | None = step.parent_net
    if trained is None:
        raise UserError(
            f"the pruning parent {step.parent} was not loaded: run through lightyard.training.train, or set "
            "parent_net to lightyard.sources.load_trained_net(parent)"
        )
    check_compatible(trained.spec, pl_module.spec, trained.source, role="pruning parent")
    state = trained.net.state_dict()
    check_fits(pl_module.net, state, trained.source)
    pl_module.net.load_state_dict(state)
    return trained.source


def _forget_best_checkpoint(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """After a pruning step, a checkpoint of the denser network must not stay 'best': the run's result is
    the pruned network, so best-checkpoint tracking (and `val/acc_best`) start over."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor:
            callback.best_k_models = {}
            callback.best_model_score = None
            callback.best_model_path = ""
            callback.kth_best_model_path = ""
            callback.kth_value = torch.tensor(-torch.inf if callback.mode == "max" else torch.inf)
            if isinstance(callback, BestCheckpoint):
                callback.best_tiebreak = torch.inf
    best = getattr(pl_module, "val_acc_best", None)
    if best is not None:
        best.reset()


class IterativePruning(ModelPruning, PruningStep):
    """Global L1 unstructured pruning of conv and linear weights, in `steps` steps that compound to
    `amount`, starting after epoch `start_epoch` and every `every` epochs after it, with fine-tuning
    in between. Masks are made permanent at the end of fit and in every checkpoint, so exports hold
    plain tensors with zeros, not `weight_orig` and masks.

    Lightning's `ModelPruning` prunes on rank zero only; here every rank applies the same mask (global L1
    on the weights DDP keeps identical), so all ranks train the same pruned network.
    """

    method = "unstructured"

    def __init__(
        self,
        amount: float = 0.8,
        steps: int = 4,
        start_epoch: int = 5,
        every: int = 2,
        parent: str | None = None,
        lottery_ticket: bool = False,
        max_drop: float = DEFAULT_MAX_DROP,
    ) -> None:
        self.target = amount
        self.per_step = per_step_amount(amount, steps)
        if start_epoch < 0 or every < 1:
            raise UserError(f"prune.start_epoch={start_epoch} must be ≥ 0 and prune.every={every} ≥ 1")
        self.epochs = [start_epoch + i * every for i in range(steps)]
        self.parent = parent
        self.parents = []
        self.max_drop = max_drop
        self.lottery_ticket = lottery_ticket
        super().__init__(
            "l1_unstructured",
            parameter_names=["weight"],
            use_global_unstructured=True,
            amount=self.per_step,
            use_lottery_ticket_hypothesis=lottery_ticket,
            make_pruning_permanent=True,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.epochs[-1] >= trainer.max_epochs - 1:
            raise UserError(
                f"the pruning schedule's last step is after epoch {self.epochs[-1]} but trainer.max_epochs="
                f"{trainer.max_epochs} leaves no epoch to fine-tune: raise trainer.max_epochs or lower "
                "prune.start_epoch / prune.every / prune.steps"
            )
        if self.parent:
            self.parents = [_load_parent(self, pl_module)]
            self.reference_net = cpu_float_copy(pl_module.net)
            self.reference = self.parents[0]
        else:
            self.reference = f"the network before the first step (epoch {self.epochs[0]})"
        super().setup(trainer, pl_module, stage)

    def filter_parameters_to_prune(self, parameters_to_prune):
        return [(module, name) for module, name in parameters_to_prune if isinstance(module, PRUNABLE)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > self.epochs[0]:  # resumed after a pruning step: zeros are the masks
            restore_masks(pl_module.net)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not ModelPruning's: it prunes on rank zero only, and DDP ranks would then train different networks.
        epoch = trainer.current_epoch
        if epoch not in self.epochs:
            return
        if self.reference_net is None and epoch == self.epochs[0]:
            self.reference_net = cpu_float_copy(pl_module.net)
        self.apply_pruning(self.per_step)
        if self.lottery_ticket:
            self.apply_lottery_ticket_hypothesis()
        _forget_best_checkpoint(trainer, pl_module)
        total, layers = sparsity(pl_module.net)
        per_layer = {f"prune/sparsity/{name}": value for name, value in layers.items()}
        log_scalars(trainer, {"prune/sparsity": total, **per_layer})
        if trainer.is_global_zero:
            step = self.epochs.index(epoch) + 1
            log.info(
                f"pruning step {step}/{len(self.epochs)} after epoch {epoch}: {total:.1%} of weights zero"
            )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_against_reference(trainer, pl_module)

    def lineage_step(self) -> dict:
        step = {
            "step": "prune",
            "method": self.method,
            "amount": self.target,
            "per_step": self.per_step,
            "epochs": self.epochs,
            "lottery_ticket": self.lottery_ticket,
            "parent": self.parent or "none",
        }
        if self.gate is not None:
            step["accuracy"] = self.gate.to_dict()
        return step


class StructuredPruning(PruningStep):
    """Removes `amount` of the channels of every convolution (lowest L1 norm first) from a trained
    `parent` at the start of fit, then the run fine-tunes the smaller network. The stored net config is
    marked, so checkpoints and registered versions rebuild at the pruned sizes."""

    method = "structured"

    def __init__(self, parent: str | None, amount: float = 0.5, max_drop: float = DEFAULT_MAX_DROP) -> None:
        if not parent:
            raise UserError(
                "structured pruning removes channels from a trained network: set prune.parent to a registry "
                "reference (digits-cnn:latest) or a checkpoint path"
            )
        self.parent = parent
        self.parents: list[str] = []
        self.amount = amount
        self.max_drop = max_drop
        self.details: dict = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        net_config = pl_module.hparams.setdefault("net_config", {})
        if stage != "fit" or net_config.get(PRUNED_CHANNELS):  # resumed: the net is already pruned
            return
        self.parents = [_load_parent(self, pl_module)]
        self.reference_net = cpu_float_copy(pl_module.net)
        self.reference = self.parents[0]
        spec = pl_module.spec
        example = torch.zeros(1, spec.channels, spec.height, spec.width)
        self.details = prune_channels(pl_module.net, example, self.amount)
        net_config[PRUNED_CHANNELS] = True
        if trainer.is_global_zero:
            ratio = self.details["macs_before"] / self.details["macs_after"]
            log.info(
                f"removed {self.amount:.0%} of the channels of {self.parents[0]}: {ratio:.2f}× fewer MACs"
            )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_against_reference(trainer, pl_module)

    def lineage_step(self) -> dict:
        step = {"step": "prune", "method": self.method, "amount": self.amount, "parent": self.parent}
        step.update(self.details)
        if self.gate is not None:
            step["accuracy"] = self.gate.to_dict()
        return step
