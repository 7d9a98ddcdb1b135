"""ClassifierModule: cross-entropy training of any image classifier, with the metrics every run reports."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightyard.data.preprocess import PreprocessSpec
from lightyard.tracking.figures import confusion_matrix_figure
from lightyard.tracking.tensorboard import log_figure

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 and top-5 accuracy (micro-averaged: the fraction of images classified right)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        },
        prefix=prefix,
    )


class ClassifierModule(L.LightningModule):
    """Trains `net` with cross-entropy; logs `{train,val,test}/{loss,acc}`, top-5, `val/acc_best`, confusion.

    The optimizer and scheduler arrive as Hydra partials (`torch.optim.AdamW` with `lr` bound, …) and get
    the parameters here. The preprocessing spec is stored in the checkpoint's hyperparameters, so a
    checkpoint says which inputs it expects.
    """

    def __init__(
        self,
        net: nn.Module,
        preprocess: dict,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.spec = PreprocessSpec.from_dict(preprocess)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        num_classes = self.spec.num_classes
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics.update(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        preds = logits.argmax(dim=1)
        if stage != "train":
            getattr(self, f"{stage}_confusion").update(preds, y)
        return {"loss": loss, "preds": preds}

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "test")

    def on_train_start(self) -> None:
        # The sanity check's two batches must not count towards the best validation accuracy.
        self.val_acc_best.reset()

    def on_validation_epoch_end(self) -> None:
        accuracy = self.val_metrics["acc"].compute()
        self.val_acc_best.update(accuracy)
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)
        self._log_confusion("val")

    def on_test_epoch_end(self) -> None:
        self._log_confusion("test")

    def _log_confusion(self, stage: str) -> None:
        confusion: MulticlassConfusionMatrix = getattr(self, f"{stage}_confusion")
        matrix = confusion.compute()  # on every rank: compute() synchronises across processes
        confusion.reset()
        if self.trainer.sanity_checking:
            return
        log_figure(
            self.trainer,
            f"{stage}/confusion_matrix",
            lambda: confusion_matrix_figure(matrix.cpu(), self.spec.class_names),
        )

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"},
        }
