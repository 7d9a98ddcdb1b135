"""`export_model`: the one export entry point, used by the export callback and by `lightyard export`.

For each requested format it writes the artifact, loads it back in its own runtime and runs the parity
gate. Artifacts that fail are moved to `rejected/` and marked in `export.json`, so nothing downstream
(registration, serving) can pick them up. The preprocessing spec, the class names and the state dict are
written beside them: an export folder is complete on its own.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn

from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError, first_line
from lightyard.export.formats import EXPORTED, FORMATS
from lightyard.export.manifest import LABELS, PREPROCESS, REJECTED, STATE_DICT, ExportReport
from lightyard.export.parity import DEFAULT_ATOL, check_parity
from lightyard.export.runtimes import load_artifact
from lightyard.export.writers import WRITERS

log = logging.getLogger("lightyard")


def cpu_float_copy(net: nn.Module) -> nn.Module:
    """What every export and compression step works on: a CPU float32 copy in eval mode, whatever the
    training device and precision. Made outside inference mode (Lightning's test hooks run in it), so the
    copy's tensors can be traced and quantized."""
    with torch.inference_mode(False):
        return copy.deepcopy(net).to("cpu", torch.float32).eval()


def check_formats(formats: Sequence[str]) -> list[str]:
    unknown = [name for name in formats if name not in EXPORTED]
    if unknown or not formats:
        raise UserError(
            f"unknown export format {', '.join(unknown) or '(none given)'}: choose from {', '.join(EXPORTED)}"
        )
    return list(dict.fromkeys(formats))


def export_model(
    net: nn.Module,
    spec: PreprocessSpec,
    inputs: torch.Tensor,
    out_dir: str | Path,
    *,
    net_config: dict,
    formats: Sequence[str] = EXPORTED,
    opset: int | None = None,
    atol: float = DEFAULT_ATOL,
) -> ExportReport:
    """Export `net` (any device or precision; a CPU float32 copy in eval mode is exported) to `out_dir`.

    `inputs` are real preprocessed images (N×C×H×W, N ≥ 2): the gate runs them at batch 1 and batch N.
    `net_config` is the `model.net` config that rebuilds the architecture; it is recorded, not used.
    """
    formats = check_formats(formats)
    if len(inputs) < 2:
        raise UserError("export needs at least 2 test images for the parity gate")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = cpu_float_copy(net)
    inputs = inputs.detach().to("cpu", torch.float32)

    torch.save(net.state_dict(), out_dir / STATE_DICT)
    spec.save(out_dir / PREPROCESS)
    (out_dir / LABELS).write_text("".join(f"{name}\n" for name in spec.class_names))

    report = ExportReport(out_dir, net_config)
    for name in formats:
        report.formats[name] = _export_one(name, net, inputs, out_dir, opset, atol)
    report.save()
    return report


def _export_one(
    name: str, net: nn.Module, inputs: torch.Tensor, out_dir: Path, opset: int | None, atol: float
) -> dict:
    return produce(
        name,
        FORMATS[name].filename,
        out_dir,
        write=lambda path: WRITERS[name](net, inputs[:2], path, opset),
        check=lambda path: check_parity(load_artifact(name, path), net, inputs, atol),
    )


class Gate(Protocol):
    """A verdict on an artifact: the parity gate (`Parity`) or the accuracy gate (`AccuracyGate`)."""

    kind: ClassVar[str]  # the key its figures are stored under in export.json

    @property
    def passed(self) -> bool: ...

    def to_dict(self) -> dict: ...

    def summary(self) -> str: ...


def produce(
    name: str, filename: str, out_dir: Path, write: Callable[[Path], dict], check: Callable[[Path], Gate]
) -> dict:
    """Write one artifact, run it through its gate, and keep it or move it to `rejected/` (so nothing
    downstream, registration or serving, can pick it up). Returns its `export.json` entry."""
    path = out_dir / filename
    rejected = out_dir / REJECTED / filename
    rejected.unlink(missing_ok=True)
    entry: dict = {"file": filename, "passed": False}
    started = time.perf_counter()
    try:
        entry.update(write(path))
    except Exception as err:
        path.unlink(missing_ok=True)
        entry["error"] = f"could not export: {first_line(err)}"
        log.warning(f"export {name}: {entry['error']}")
        return entry
    entry["export_seconds"] = round(time.perf_counter() - started, 3)
    try:
        verdict = check(path)
    except Exception as err:
        entry["error"] = f"could not run in its runtime: {first_line(err)}"
    else:
        entry[verdict.kind] = verdict.to_dict()
        entry["passed"] = verdict.passed
        if verdict.passed:
            log.info(f"export {name}: {path} passed: {verdict.summary()}")
            return entry
        entry["error"] = f"failed the {verdict.kind} gate: {verdict.summary()}"
    rejected.parent.mkdir(exist_ok=True)
    path.replace(rejected)
    entry["file"] = f"{REJECTED}/{filename}"
    log.warning(f"export {name}: {entry['error']}; moved to {rejected}, it will not be registered")
    return entry
