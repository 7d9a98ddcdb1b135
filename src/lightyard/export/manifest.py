"""What an export folder holds, as `export.json` records it: read by registration, quantization and the
reports, none of which need torch for it."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from lightyard.errors import UserError
from lightyard.export.formats import QUANTIZED
from lightyard.io import write_json_atomic

MANIFEST = "export.json"
PREPROCESS = "preprocess.json"
LABELS = "labels.txt"
STATE_DICT = "model.pt"
REJECTED = "rejected"


@dataclass
class ExportReport:
    """What `export.json` says: per format, the file, how it was made, its parity figures or the reason."""

    out_dir: Path
    net_config: dict
    formats: dict[str, dict] = field(default_factory=dict)

    @property
    def passed(self) -> list[str]:
        return [name for name, entry in self.formats.items() if entry["passed"]]

    @property
    def int8(self) -> dict[str, dict]:
        """The INT8 artifacts' entries, passed or not."""
        return {name: entry for name, entry in self.formats.items() if name in QUANTIZED}

    @property
    def files(self) -> list[str]:
        """The files a registered version carries: passing artifacts, weights, preprocessing, labels."""
        return [STATE_DICT, PREPROCESS, LABELS, *(self.formats[name]["file"] for name in self.passed)]

    def to_dict(self) -> dict:
        return {
            "net": self.net_config,
            "state_dict": STATE_DICT,
            "preprocess": PREPROCESS,
            "labels": LABELS,
            "formats": self.formats,
            "torch": metadata.version("torch"),
            "python": platform.python_version(),
        }

    def save(self) -> None:
        write_json_atomic(self.out_dir / MANIFEST, self.to_dict())

    @classmethod
    def load(cls, out_dir: str | Path) -> ExportReport:
        path = Path(out_dir) / MANIFEST
        if not path.is_file():
            raise UserError(f"{out_dir} has no {MANIFEST}: it is not an export folder (run lightyard export)")
        data = json.loads(path.read_text())
        return cls(Path(out_dir), data["net"], data["formats"])
