"""Matplotlib figures for TensorBoard: a confusion matrix and a grid of labelled predictions."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: runs in CI, DDP workers and SLURM jobs

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

MAX_ANNOTATED_CLASSES = 20


def confusion_matrix_figure(matrix: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """Counts per (true, predicted) class; cells are annotated while the matrix stays readable."""
    n = len(class_names)
    size = min(3 + 0.45 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    ax.imshow(matrix.numpy(), cmap="Blues")
    ticks = range(n) if n <= MAX_ANNOTATED_CLASSES else []
    ax.set_xticks(list(ticks), [class_names[i] for i in ticks], rotation=90)
    ax.set_yticks(list(ticks), [class_names[i] for i in ticks])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= MAX_ANNOTATED_CLASSES:
        threshold = matrix.max().item() / 2
        for i in range(n):
            for j in range(n):
                count = int(matrix[i, j])
                color = "white" if count > threshold else "black"
                ax.text(j, i, count, ha="center", va="center", fontsize=8, color=color)
    accuracy = matrix.diag().sum().item() / max(matrix.sum().item(), 1)
    ax.set_title(f"accuracy {accuracy:.4f} on {int(matrix.sum())} images")
    fig.tight_layout()
    return fig


def prediction_grid_figure(
    images: torch.Tensor, predicted: torch.Tensor, true: torch.Tensor, class_names: Sequence[str]
) -> Figure:
    """Images in [0, 1] titled `pred / true`, wrong ones in red."""
    count = len(images)
    columns = min(8, count)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, p, t in zip(axes.flat, images, predicted.tolist(), true.tolist(), strict=False):
        pixels = image.permute(1, 2, 0).numpy()
        ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{class_names[p]} / {class_names[t]}", fontsize=8, color="black" if p == t else "red")
    fig.suptitle("predicted / true", fontsize=9)
    fig.tight_layout()
    return fig
