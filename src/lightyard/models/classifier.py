"""ClassifierModule: cross-entropy training of any image classifier, with the metrics every run reports."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightyard.data.preprocess import PreprocessSpec
from lightyard.tracking.figures import confusion_matrix_figure
from lightyard.tracking.loggers import log_figure, log_graph

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Batch = tuple[torch.Tensor, torch.Tensor]  # images N×C×H×W, labels N


def accuracy_metrics(num_classes: int, prefix: str, top5: bool = True) -> MetricCollection:
    """Top-1 (and top-5) accuracy, micro-averaged: the fraction of images classified right.

    Inputs are always logits and integer labels from `_step`, so per-update argument checks are skipped.
    """
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False)}
    if top5:
        top_k = min(5, num_classes)
        metrics["acc_top5"] = MulticlassAccuracy(
            num_classes, top_k=top_k, average="micro", validate_args=False
        )
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)


class ClassifierModule(L.LightningModule):
    """Trains `net` with cross-entropy; logs `{train,val,test}/{loss,acc}`, val/test top-5, `val/acc_best`.

    The optimizer and scheduler arrive as Hydra partials (`torch.optim.AdamW` with `lr` bound, …) and get
    the parameters here. The preprocessing spec and the `model.net` config are stored in the checkpoint's
    hyperparameters, so a checkpoint says which inputs it expects and how to rebuild its network.
    """

    def __init__(
        self,
        net: nn.Module,
        preprocess: dict,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        net_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.spec = PreprocessSpec.from_dict(preprocess)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        num_classes = self.spec.num_classes
        self.train_metrics = accuracy_metrics(num_classes, "train/", top5=False)  # cheap per step
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        # a NaN loss shows up in the logged mean instead of raising mid-epoch
        self.train_loss, self.val_loss, self.test_loss = (
            MeanMetric(nan_strategy="disable") for _ in range(3)
        )
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints: a resumed run keeps its best so far

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is None:  # once per run, not again when a run resumes
            spec = self.spec
            log_graph(
                self.trainer,
                self.net,
                torch.zeros(1, spec.channels, spec.height, spec.width, device=self.device),
            )

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and metric updates. Metrics are logged once per epoch: each `self.log` call costs Lightning
        about half a millisecond, as much as a whole step of the digits CNN."""
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, batch, stage)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=len(y))
        getattr(self, f"{stage}_metrics").update(logits.detach(), y)
        return loss, logits.argmax(dim=1)

    def loss(self, logits: torch.Tensor, batch: Batch, stage: str) -> torch.Tensor:
        """Cross-entropy against the labels; subclasses change what training optimises."""
        return self.criterion(logits, batch[1])

    def lineage(self) -> dict:
        """What produced this model, for the registry: parent models and the steps applied."""
        return {"parents": [], "steps": [{"step": "train"}]}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        _, preds = self._step(batch, "val")
        self.val_confusion.update(preds, batch[1])
        return {"preds": preds}

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        _, preds = self._step(batch, "test")
        self.test_confusion.update(preds, batch[1])
        return {"preds": preds}

    def _log_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Loss and accuracy over the epoch; compute() synchronises them across DDP processes."""
        loss: MeanMetric = getattr(self, f"{stage}_loss")
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        loss.reset()
        metrics.reset()
        self.log_dict(values, prog_bar=True)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch_metrics("val")
        if self.trainer.sanity_checking:  # the sanity check's two batches are not an epoch
            self.val_confusion.reset()
            return
        self.val_acc_best.update(values["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
        self._log_confusion("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        self._log_confusion("test")

    def _log_confusion(self, stage: str) -> None:
        confusion: MulticlassConfusionMatrix = getattr(self, f"{stage}_confusion")
        matrix = confusion.compute()  # on every rank: compute() synchronises across processes
        confusion.reset()
        log_figure(
            self.trainer,
            f"{stage}/confusion_matrix",
            lambda: confusion_matrix_figure(matrix.cpu(), self.spec.class_names),
        )
        # Rank zero spends a moment drawing; without this, under ddp_spawn another rank could finish the
        # stage and tear down its process while rank zero is still due in a collective (seen as SIGABRT).
        self.trainer.strategy.barrier("confusion_matrix_logged")

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }
