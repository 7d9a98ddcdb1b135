"""The model store: BentoML's, made safe for concurrent writers and killed processes.

Versions live where BentoML keeps them (`$BENTOML_HOME/models/<name>/<version>/` with a `model.yaml`), so
`bentoml models list` and a BentoML service see them. What BentoML's own save does not give, this adds:
- a version is assembled in `$BENTOML_HOME/lightyard/staging/` and appears with one atomic rename, so a
  registration killed mid-write leaves nothing half-written in the store;
- label changes (stages) rewrite `model.yaml` by temp file + rename, under an exclusive lock that readers
  resolving `name@stage` share, so a promotion is seen whole or not at all;
- deletion renames the version out of the store before removing its files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bentoml.exceptions import BentoMLException

from lightyard.bentoml_adapter import ModelContext, ModelInfo, ModelOptions, Tag
from lightyard.errors import UserError
from lightyard.io import process_alive, write_text_atomic
from lightyard.registry.stages import STAGES

MODEL_YAML = "model.yaml"
STAGE_LABEL = "stage"
STAGE_SINCE_LABEL = "stage_since"  # when the stage was set: the newest holder wins after a crash mid-promote
MODULE = "lightyard.registry"


def bentoml_home() -> Path:
    """BentoML's own rule: `$BENTOML_HOME`, else `~/bentoml`."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()


@dataclass(frozen=True)
class Version:
    """One registered model version as the store holds it."""

    name: str
    version: str
    path: Path
    labels: dict[str, str]
    metadata: dict
    created: datetime
    frameworks: dict[str, str]

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def stage(self) -> str:
        return self.labels.get(STAGE_LABEL, "none")


class ModelStore:
    """Versions of named models under `$BENTOML_HOME/models`, resolved as `name:version`,
    `name:latest` (or just `name`) and `name@stage`."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or bentoml_home()
        self.models = self.home / "models"
        self._work = self.home / "lightyard"

    # reading

    def versions(self, name: str | None = None) -> list[Version]:
        """Every complete version (of `name`, or of all names), oldest first."""
        names = [name] if name else sorted(p.name for p in self._dirs(self.models))
        found = [
            self._read(path)
            for model_name in names
            for path in self._dirs(self.models / model_name)
            if (path / MODEL_YAML).is_file()
        ]
        return sorted(found, key=lambda v: v.created)

    def resolve(self, ref: str) -> Version:
        """`name:version`, `name:latest`, `name` or `name@stage` to a version, or a one-line `UserError`."""
        if "@" not in ref:
            return self._resolve(ref)
        with self._lock(shared=True):  # a promotion in progress is seen whole or not at all
            return self._resolve(ref)

    def _resolve(self, ref: str) -> Version:
        name, sep, stage = ref.partition("@")
        if sep:
            if stage not in STAGES[1:]:
                raise UserError(f"unknown stage '{stage}' in {ref}: use {' or '.join(STAGES[1:])}")
            holders = [v for v in self.versions_of(name) if v.stage == stage]
            if not holders:
                raise UserError(
                    f"no version of {name} is in {stage}: promote one with "
                    f"lightyard models promote {name}:<version> {stage}"
                )
            return max(holders, key=lambda v: (v.labels.get(STAGE_SINCE_LABEL, ""), v.created))
        name, _, version = ref.partition(":")
        versions = self.versions_of(name)
        if version in ("", "latest"):
            return versions[-1]
        for candidate in versions:
            if candidate.version == version:
                return candidate
        raise UserError(f"model {name} has no version {version}: see lightyard models list {name}")

    def versions_of(self, name: str) -> list[Version]:
        """The versions of `name`, oldest first; a `UserError` if there are none."""
        versions = self.versions(name) if name and (self.models / name).is_dir() else []
        if not versions:
            raise UserError(f"no model named '{name}' in {self.models}: see lightyard models list")
        return versions

    # writing

    def add(self, name: str, files: dict[str, Path], metadata: dict, context: dict[str, str]) -> Version:
        """Copy `files` (name in the version → source) into a new version of `name`, atomically.

        `metadata["files"]` records the sha256 and size of every copy as it sits in the store. BentoML
        metadata cannot hold nulls: keys whose value is null are left out.
        """
        tag = _new_tag(name)
        staging_root = self._work / "staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(staging_root)
        staging = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=staging_root))
        try:
            for relative, source in files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            metadata = {
                **without_nulls(metadata),
                "files": {rel: file_record(staging / rel) for rel in files},
            }
            info = ModelInfo(
                tag=tag,
                module=MODULE,
                labels={STAGE_LABEL: "none"},
                options=ModelOptions(),
                metadata=metadata,
                context=ModelContext(framework_name="lightyard", framework_versions=context),
                signatures={},
                api_version="v1",
            )
            write_text_atomic(staging / MODEL_YAML, info.dump())
            _fsync_tree(staging)
            final = self.models / tag.name / tag.version
            with self._lock():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, final)
                self._write_latest(tag.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._read(final)

    def set_stage(self, ref: str, stage: str) -> tuple[Version, list[Version]]:
        """Put one version in `stage`; the previous holder of a stage other than `none` drops to `none`.

        The new holder is written first: a crash between the two writes leaves two holders, and resolution
        picks the newer `stage_since`, so readers never see the promotion undone.
        """
        if stage not in STAGES:
            raise UserError(f"unknown stage '{stage}': use one of {', '.join(STAGES)}")
        with self._lock():
            target = self._resolve(ref)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            self._relabel(target, {STAGE_LABEL: stage, STAGE_SINCE_LABEL: now})
            demoted = []
            if stage != "none":
                for other in self.versions(target.name):
                    if other.stage == stage and other.version != target.version:
                        self._relabel(other, {STAGE_LABEL: "none", STAGE_SINCE_LABEL: now})
                        demoted.append(other)
            return self._read(target.path), demoted

    def delete(self, version: Version) -> None:
        """Move the version out of the store (one rename), then remove its files."""
        trash = self._work / "trash"
        trash.mkdir(parents=True, exist_ok=True)
        with self._lock():
            doomed = Path(tempfile.mkdtemp(dir=trash)) / version.version
            os.rename(version.path, doomed)
            if self.versions(version.name):
                self._write_latest(version.name)
            else:
                shutil.rmtree(self.models / version.name, ignore_errors=True)
        shutil.rmtree(doomed.parent, ignore_errors=True)

    # helpers

    @contextlib.contextmanager
    def _lock(self, shared: bool = False) -> Iterator[None]:
        self._work.mkdir(parents=True, exist_ok=True)
        with open(self._work / "registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_latest(self, name: str) -> None:
        """BentoML's `latest` pointer (for `bentoml` itself), kept to the newest version."""
        newest = self.versions(name)[-1]
        write_text_atomic(self.models / name / "latest", newest.version)

    def _relabel(self, version: Version, labels: dict[str, str]) -> None:
        with open(version.path / MODEL_YAML) as stream:
            info = ModelInfo.from_yaml_file(stream)
        relabelled = ModelInfo(
            tag=info.tag,
            module=info.module,
            labels={**info.labels, **labels},
            options=info.options,
            metadata=info.metadata,
            context=info.context,
            signatures=info.signatures,
            api_version=info.api_version,
            creation_time=info.creation_time,
        )
        write_text_atomic(version.path / MODEL_YAML, relabelled.dump())

    @staticmethod
    def _read(path: Path) -> Version:
        with open(path / MODEL_YAML) as stream:
            info = ModelInfo.from_yaml_file(stream)
        return Version(
            name=info.tag.name,
            version=str(info.tag.version),
            path=path,
            labels=dict(info.labels),
            metadata=info.metadata,
            created=info.creation_time,
            frameworks=dict(info.context.framework_versions),
        )

    @staticmethod
    def _dirs(path: Path) -> list[Path]:
        return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def without_nulls(value):
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [without_nulls(item) for item in value]
    return value


def file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def damaged_files(version: Version) -> list[str]:
    """Why each registered file no longer matches its record: missing, truncated, or changed."""
    problems = []
    for relative, record in version.metadata.get("files", {}).items():
        path = version.path / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif path.stat().st_size != record["bytes"]:
            problems.append(
                f"{relative} is truncated or resized ({path.stat().st_size} of {record['bytes']} bytes)"
            )
        elif file_record(path)["sha256"] != record["sha256"]:
            problems.append(f"{relative} was modified (sha256 differs from the registered one)")
    if not version.metadata.get("files"):
        problems.append("no file checksums recorded")
    return problems


def check_model_name(name: str) -> str:
    try:
        Tag(name)
    except (BentoMLException, ValueError):
        raise UserError(
            f"invalid model name '{name}': use lowercase letters, digits, '-', '_' and '.', "
            "starting with a letter or digit (set register.name=...)"
        ) from None
    return name


def verify(version: Version, problems: list[str] | None = None) -> None:
    """A `UserError` naming every damaged file of `version` (`problems` from `damaged_files`, if known)."""
    problems = damaged_files(version) if problems is None else problems
    if problems:
        raise UserError(
            f"{version.tag} failed verification: {'; '.join(problems)} "
            f"(in {version.path}): restore the file or register the model again"
        )


def _new_tag(name: str) -> Tag:
    return Tag(check_model_name(name)).make_new_version()


def _fsync_tree(root: Path) -> None:
    """Data on disk before the rename makes it visible: a power cut cannot expose empty files."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _remove_abandoned(staging_root: Path) -> None:
    """Staging folders of registrations whose process is gone (killed mid-write)."""
    for folder in staging_root.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
