"""DistillationModule: a student network trained on labels and on a frozen teacher's softened outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightyard.errors import UserError
from lightyard.models.classifier import Batch, ClassifierModule, OptimizerFactory, SchedulerFactory
from lightyard.models.loading import TrainedNet, check_compatible


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, hard, soft) with total = α·CE(student, labels) + (1−α)·T²·KL(p_teacher,T ‖ p_student,T).

    The T² keeps the soft term's gradients the same size whatever the temperature (Hinton et al. 2015).
    """
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (temperature**2)
    return alpha * hard + (1 - alpha) * soft, hard, soft


class DistillationModule(ClassifierModule):
    """Trains the student `net` with `distillation_loss`; validation and test use plain cross-entropy,
    so their losses compare with any classifier's.

    The teacher (which `train()` loads from a registry tag or a checkpoint, `lightyard.sources`) is frozen,
    in eval mode, kept on the student's device but outside the module's state: it is not in the
    checkpoint, not wrapped by DDP, not optimised; the checkpoint names where it came from.
    Logs `train/loss_hard`, `train/loss_soft` (and `train/loss`, their weighted sum) every epoch and the
    teacher's `val/teacher_acc` once, on the first validation epoch.
    """

    def __init__(
        self,
        net: nn.Module,
        preprocess: dict,
        optimizer: OptimizerFactory,
        teacher: TrainedNet | None = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        net_config: dict | None = None,
    ) -> None:
        super().__init__(net, preprocess, optimizer, scheduler, label_smoothing, net_config)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "teacher"], logger=False)
        if teacher is None:
            raise UserError("distillation needs a teacher: pass distill.teacher=NAME@production or a .ckpt")
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise UserError(
                f"distill.temperature must be > 0 and distill.alpha in [0, 1] (got {temperature}, {alpha})"
            )
        check_compatible(teacher.spec, self.spec, teacher.source)
        self._teacher = [teacher.net.requires_grad_(False).eval()]  # a list: invisible to nn.Module
        self.teacher_source = teacher.source
        self.hparams["teacher"] = teacher.source  # in the checkpoint: where the soft targets came from
        self.temperature, self.alpha = temperature, alpha
        self.hard_loss, self.soft_loss = MeanMetric(), MeanMetric()
        self.teacher_val_acc = MulticlassAccuracy(self.spec.num_classes, average="micro", validate_args=False)
        self._teacher_measured = False

    @property
    def teacher(self) -> nn.Module:
        teacher = self._teacher[0]
        if next(teacher.parameters()).device != self.device:
            teacher.to(self.device)
        return teacher

    def loss(self, logits: torch.Tensor, batch: Batch, stage: str) -> torch.Tensor:
        if stage != "train":
            return super().loss(logits, batch, stage)
        with torch.no_grad():
            teacher_logits = self.teacher(batch[0])
        total, hard, soft = distillation_loss(
            logits, teacher_logits, batch[1], self.temperature, self.alpha, self.criterion.label_smoothing
        )
        self.hard_loss.update(hard.detach(), weight=len(batch[1]))
        self.soft_loss.update(soft.detach(), weight=len(batch[1]))
        return total

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        losses = {"train/loss_hard": self.hard_loss.compute(), "train/loss_soft": self.soft_loss.compute()}
        self.log_dict(losses)
        self.hard_loss.reset()
        self.soft_loss.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        if not self._teacher_measured and not self.trainer.sanity_checking:
            with torch.no_grad():
                self.teacher_val_acc.update(self.teacher(batch[0]), batch[1])
        return super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self._teacher_measured and not self.trainer.sanity_checking:
            self.log("val/teacher_acc", self.teacher_val_acc.compute())
            self.teacher_val_acc.reset()
            self._teacher_measured = True
        super().on_validation_epoch_end()

    def lineage(self) -> dict:
        step = {"step": "distill", "teacher": self.teacher_source, "temperature": self.temperature}
        return {"parents": [self.teacher_source], "steps": [{**step, "alpha": self.alpha}]}
