"""Registering an export folder as a model version, and loading a version back, checksums first.

Nothing here imports torch: the server loads and runs ONNX versions without it. Only `RegisteredModel.net`
(the eager network) and the TorchScript runtimes do.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.export.manifest import LABELS, PREPROCESS, STATE_DICT, ExportReport
from lightyard.export.runtimes import Runner, load_artifact, onnx_session
from lightyard.registry.store import ModelStore, Version, verify

if TYPE_CHECKING:
    from onnxruntime import InferenceSession
    from torch import nn

FRAMEWORKS = ("torch", "torchvision", "lightning", "onnx", "onnxruntime", "bentoml", "lightyard")


def register_export(
    export_dir: str | Path,
    name: str,
    *,
    metrics: dict[str, float],
    config: dict,
    lineage: dict,
    store: ModelStore | None = None,
) -> Version:
    """Register the artifacts of `export_dir` that passed the parity gate, with everything needed to
    trust and reproduce them: metrics, config, parity figures, preprocessing, lineage, versions, commit."""
    export_dir = Path(export_dir)
    report = ExportReport.load(export_dir)
    rejected = {fmt: entry.get("error", "") for fmt, entry in report.formats.items() if not entry["passed"]}
    metadata = {
        "metrics": metrics,
        "config": json.dumps(config, sort_keys=True),  # BentoML metadata cannot hold the config's nulls
        "preprocess": PreprocessSpec.load(export_dir / PREPROCESS).to_dict(),
        "net": report.net_config,
        "formats": {fmt: report.formats[fmt] for fmt in report.passed},
        "rejected": rejected,
        "lineage": lineage,
        "git_commit": git_commit() or "unknown",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    files = {relative: export_dir / relative for relative in report.files}
    return (store or ModelStore()).add(name, files, metadata, framework_versions())


def register_run(record: dict, store: ModelStore | None = None) -> str:
    """Register a run's export as `train()` describes it (`export_dir`, `name`, `stage`, `metrics`,
    `config`, `lineage`) and set its stage; returns the line that says where it went. A sweep calls it
    once, for its best trial, with the record that trial left in its run dir."""
    store = store or ModelStore()
    version = register_export(
        record["export_dir"],
        record["name"],
        metrics=record["metrics"],
        config=record["config"],
        lineage=record["lineage"],
        store=store,
    )
    stage = record.get("stage")
    if stage not in (None, "none"):
        store.set_stage(version.tag, stage)
    shown = f" ({stage})" if stage not in (None, "none") else ""
    return f"registered as {version.tag}{shown} in {store.models}: lightyard models show {version.tag}"


def stored_config(metadata: dict) -> dict:
    return json.loads(metadata.get("config") or "{}")


def framework_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in FRAMEWORKS:
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the lightyard checkout that produced the model (`+dirty` with local changes)."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class RegisteredModel:
    """A verified model version: its files, metadata and preprocessing, and ways to run it.

    `model.ts` and `model.pt2` load through pickle-based readers: `runner()` loads them only from the
    version `load()` verified against its checksums; `file(fmt)` gives any artifact's path.
    """

    version: Version
    spec: PreprocessSpec

    @property
    def tag(self) -> str:
        return self.version.tag

    @property
    def path(self) -> Path:
        return self.version.path

    @property
    def metadata(self) -> dict:
        return self.version.metadata

    @property
    def stage(self) -> str:
        return self.version.stage

    @property
    def config(self) -> dict:
        """The resolved training config."""
        return stored_config(self.metadata)

    def file(self, fmt: str) -> Path:
        """The registered file of an export format (`onnx`, `torchscript`, `pt2`)."""
        formats = self.metadata.get("formats", {})
        if fmt not in formats:
            raise UserError(f"{self.tag} has no {fmt} artifact (registered: {', '.join(formats) or 'none'})")
        return self.path / formats[fmt]["file"]

    def runner(self, fmt: str, threads: int | None = None, device: str = "cpu") -> Runner:
        """A batch of inputs → logits in the format's runtime (`onnx`, `onnx-int8`, `torchscript`, …) on
        `device` (`cpu`, `cuda`).

        Loading TorchScript unpickles: do it only from a version `load()` verified (checksums)."""
        return load_artifact(fmt, self.file(fmt), threads, device)

    def onnx_session(self, threads: int | None = None) -> InferenceSession:
        """An ONNX Runtime session; `threads` caps intra-op threads (workers × threads ≈ cores)."""
        return onnx_session(self.file("onnx"), threads)

    def net(self) -> nn.Module:
        """The eager network in eval mode, rebuilt from the stored config and state dict."""
        from lightyard.models.checkpoints import read_checkpoint
        from lightyard.models.loading import rebuild_net

        state = read_checkpoint(self.path / STATE_DICT)  # weights_only=True
        return rebuild_net(self.metadata["net"], self.spec, state, f"{self.tag}/{STATE_DICT}")

    def class_names(self) -> list[str]:
        return (self.path / LABELS).read_text().splitlines()


def load(ref: str, store: ModelStore | None = None) -> RegisteredModel:
    """`name:version`, `name:latest` or `name@stage`, after verifying every file against its sha256."""
    version = (store or ModelStore()).resolve(ref)
    verify(version)
    return RegisteredModel(version, PreprocessSpec.load(version.path / PREPROCESS))
