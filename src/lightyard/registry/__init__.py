"""The model registry: versions in BentoML's model store with checksums, stages and lineage.

`STAGES` loads without BentoML; the rest is imported on first use.
"""

from lightyard.lazy import lazy_attributes
from lightyard.registry.stages import STAGES

_NEEDS_BENTOML = {
    "RegisteredModel": "lightyard.registry.registered",
    "load": "lightyard.registry.registered",
    "register_export": "lightyard.registry.registered",
    "register_run": "lightyard.registry.registered",
    "ModelStore": "lightyard.registry.store",
    "Version": "lightyard.registry.store",
    "verify": "lightyard.registry.store",
}
__all__ = ["STAGES", *_NEEDS_BENTOML]

__getattr__ = lazy_attributes(__name__, _NEEDS_BENTOML)
