"""The compression report: one table (markdown file and TensorBoard text) and a plot of accuracy against
latency, so the trade-off of each variant is visible at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from torch import nn

from lightyard.compress.gate import Batches, Predictions
from lightyard.compress.measure import Row, eager_runner, measure
from lightyard.export.formats import FORMATS, SERVED
from lightyard.export.manifest import MANIFEST, ExportReport
from lightyard.export.runtimes import load_artifact
from lightyard.io import write_text_atomic

REPORT = "report.md"
PLOT = "accuracy_latency.png"

COLUMNS = (
    "variant",
    "file size",
    "parameters",
    "non-zeros",
    "MACs",
    "p50 batch 1",
    "p50 batch 32",
    "throughput",
    "test acc",
    "top-1 agreement",
)


def measure_variants(
    net: nn.Module,
    export_dir: Path,
    test: Batches,
    *,
    reference_net: nn.Module | None = None,
    label: str = "FP32 eager",
    threads: int = 2,
    repeats: int = 20,
) -> list[Row]:
    """Rows for the eager network (`label`) and every artifact in `export_dir` that passed its gate;
    with `reference_net` (the network before pruning), a first row for it, which agreement counts against."""
    test = list(test)

    def row(name: str, run, source: nn.Module, reference: Predictions | None, path: Path | None = None):
        return measure(name, run, source, test, reference, file=path, threads=threads, repeats=repeats)

    rows: list[Row] = []
    reference: Predictions | None = None
    if reference_net is not None:
        first, reference = row(
            "FP32 eager (before pruning)", eager_runner(reference_net), reference_net, None
        )
        rows.append(first)
    eager, outcome = row(label, eager_runner(net), net, reference)
    rows.append(eager)
    reference = reference or outcome
    export = ExportReport.load(export_dir) if (export_dir / MANIFEST).is_file() else None
    for fmt in SERVED:  # the variants a deployment chooses between
        entry = export.formats.get(fmt) if export else None
        if entry and entry["passed"]:
            path = export_dir / entry["file"]
            rows.append(row(FORMATS[fmt].label, load_artifact(fmt, path, threads), net, reference, path)[0])
    return rows


def _size(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _count(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value:,}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = (
            row.name,
            _size(row.file_bytes),
            _count(row.parameters),
            _count(row.nonzeros),
            _count(row.macs),
            f"{row.p50_b1_ms:.3f} ms",
            f"{row.p50_b32_ms:.3f} ms",
            f"{row.throughput:,.0f} img/s",
            f"{row.accuracy:.4f}",
            f"{row.top1_agreement:.2%}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    notes_text = "".join(f"- {note}\n" for note in notes)
    return f"# {title}\n\n{markdown_table(rows)}\n{notes_text}"


def plot_accuracy_latency(rows: Sequence[Row], path: Path, title: str) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for row in rows:
        axes.scatter(row.p50_b1_ms, 100 * row.accuracy, s=40)
        point = (row.p50_b1_ms, 100 * row.accuracy)
        axes.annotate(row.name, point, textcoords="offset points", xytext=(5, 4))
    axes.set_xlabel("latency p50 at batch 1 (ms)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(out_dir: Path, title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> Path:
    """`report.md` and the accuracy/latency plot in `out_dir`; returns the report's path."""
    plot = plot_accuracy_latency(rows, out_dir / PLOT, title)
    text = report_markdown(title, rows, notes) + f"\n![accuracy against latency]({plot.name})\n"
    return write_text_atomic(out_dir / REPORT, text)
