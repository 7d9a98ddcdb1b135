"""The model registry: versions in BentoML's model store with checksums, stages and lineage."""

from lightyard.registry.registered import RegisteredModel, load, register_export, register_run
from lightyard.registry.store import STAGES, ModelStore, Version, verify

__all__ = [
    "STAGES",
    "ModelStore",
    "RegisteredModel",
    "Version",
    "load",
    "register_export",
    "register_run",
    "verify",
]
