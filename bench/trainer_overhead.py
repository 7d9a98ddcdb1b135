"""Seconds per epoch: ClassifierModule under Lightning's Trainer vs a plain PyTorch loop.

A third row, a module whose training step is the loss alone, separates Lightning's own per-step cost
from the ClassifierModule's loss and accuracy tracking.

Same network, data loader, batch size, optimizer and thread count; the two run alternately in one process.
Both the median and the fastest epoch of each are compared: on a shared machine the median carries the
noise of other processes, the fastest epoch is the cost of the code itself. Target: ratio ≤ 1.10.

    python bench/trainer_overhead.py [--epochs 8] [--rounds 5] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch import nn

from lightyard.data import DigitsDataModule
from lightyard.models import ClassifierModule, small_cnn


class EpochTimer(L.Callback):
    """Epoch times from one epoch start to the next (the last to the end of fit), so the module's
    epoch-end work (metric compute and logging, which run after callbacks' epoch-end hooks) is counted."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.marks, self.marks[1:], strict=False)]


def make_net(datamodule: DigitsDataModule) -> nn.Module:
    return small_cnn(datamodule.spec.num_classes, datamodule.spec.channels)


def optimizer_factory(params):
    return torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)


class LossOnlyModule(ClassifierModule):
    """What Lightning costs with nothing of ours on the step: no metric updates, no logging."""

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.criterion(self(x), y)

    def on_train_epoch_end(self) -> None:
        pass


def classifier_epochs(datamodule: DigitsDataModule, epochs: int) -> list[float]:
    return lightning_epochs(ClassifierModule, datamodule, epochs)


def loss_only_epochs(datamodule: DigitsDataModule, epochs: int) -> list[float]:
    return lightning_epochs(LossOnlyModule, datamodule, epochs)


def lightning_epochs(
    module: type[ClassifierModule], datamodule: DigitsDataModule, epochs: int
) -> list[float]:
    timer = EpochTimer()
    model = module(make_net(datamodule), datamodule.spec.to_dict(), optimizer_factory)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    return timer.seconds


def plain_epochs(datamodule: DigitsDataModule, epochs: int) -> list[float]:
    net = make_net(datamodule)
    optimizer = optimizer_factory(net.parameters())
    criterion = nn.CrossEntropyLoss()
    loader = datamodule.train_dataloader()
    seconds = []
    net.train()
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(net(x), y)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    L.seed_everything(0, verbose=False)
    datamodule = DigitsDataModule(batch_size=args.batch_size)
    datamodule.setup()
    runs = {
        "Trainer + ClassifierModule": classifier_epochs,
        "Trainer + loss-only module": loss_only_epochs,
        "plain PyTorch loop": plain_epochs,
    }
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, run in runs.items():
            seconds = run(datamodule, args.epochs)[1:]  # the first epoch warms up allocators and caches
            timings[name] += seconds
            median_ms = statistics.median(seconds) * 1e3
            print(f"round {round_ + 1}/{args.rounds} {name:28s} median {median_ms:7.1f} ms/epoch")

    plain = timings["plain PyTorch loop"]
    print(
        f"\ndigits, SmallCNN, batch {args.batch_size}, {torch.get_num_threads()} threads: "
        "ms/epoch and ratio to the plain loop"
    )
    print(f"  {'':28s} {'median':>8s} {'fastest':>8s} {'x med':>7s} {'x fast':>7s}")
    for name, seconds in timings.items():
        median_ratio = statistics.median(seconds) / statistics.median(plain)
        fastest_ratio = min(seconds) / min(plain)
        print(
            f"  {name:28s} {statistics.median(seconds) * 1e3:8.1f} {min(seconds) * 1e3:8.1f}"
            f" {median_ratio:7.3f} {fastest_ratio:7.3f}"
        )
    print("  target: Trainer + ClassifierModule ratio ≤ 1.10")


if __name__ == "__main__":
    main()
