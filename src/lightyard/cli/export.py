"""`lightyard export CKPT`: the same export and parity gate as training's export step, from a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lightyard.errors import UserError
from lightyard.export.formats import EXPORTED

if TYPE_CHECKING:  # torch and the data package load only when the command runs
    import torch

    from lightyard.data.preprocess import PreprocessSpec


def add_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a checkpoint to ONNX / TorchScript / .pt2, verified")
    export.add_argument(
        "checkpoint", type=Path, help="a Lightning checkpoint, e.g. <run>/checkpoints/best.ckpt"
    )
    export.add_argument(
        "--formats", default=",".join(EXPORTED), help=f"comma-separated: {', '.join(EXPORTED)}"
    )
    export.add_argument("--out", type=Path, help="output folder (default: <run>/export)")
    export.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    export.add_argument("--atol", type=float, default=1e-4, help="largest |Δlogit| allowed")
    export.add_argument(
        "--images",
        type=Path,
        help="a folder of image files for the parity gate (default: the run's test split)",
    )
    export.add_argument("--count", type=int, default=32, help="images through the parity gate")
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lightyard.export import export_model
    from lightyard.export.exporter import check_formats
    from lightyard.sources import net_from_checkpoint, run_config

    formats = check_formats([f.strip() for f in args.formats.split(",") if f.strip()])
    run_dir = args.checkpoint.resolve().parent.parent
    trained = net_from_checkpoint(args.checkpoint, run_config(run_dir, "model").get("net"))
    spec = trained.spec
    if args.images:
        inputs = _folder_images(args.images, spec, args.count)
    else:
        inputs = _test_images(run_dir, args.count)
    out = args.out or run_dir / "export"
    report = export_model(
        trained.net, spec, inputs, out, net_config=trained.net_config, formats=formats, opset=args.opset,
        atol=args.atol,
    )  # fmt: skip
    for fmt, entry in report.formats.items():
        verdict = "passed" if entry["passed"] else entry.get("error", "failed")
        print(f"{fmt:<12} {entry['file']:<22} {verdict}")
    print(f"exported to {out}/ (export.json has the parity figures)")
    if len(report.passed) < len(formats):
        raise UserError(f"{len(formats) - len(report.passed)} format(s) failed: see the lines above")


def _test_images(run_dir: Path, count: int) -> torch.Tensor:
    """The first `count` test images of the run that wrote the checkpoint, through its data module."""
    import torch

    from lightyard.sources import datamodule_from, run_config

    data = run_config(run_dir, "data")
    if not data:
        raise UserError(f"no test images: {run_dir} has no .hydra/config.yaml; pass --images DIR")
    datamodule = datamodule_from(data)
    images = [image for image, _ in (datamodule.datasets["test"][i] for i in range(count))]
    return torch.stack(images)


def _folder_images(folder: Path, spec: PreprocessSpec, count: int) -> torch.Tensor:
    import numpy as np
    import torch

    from lightyard.data.preprocess import IMAGE_EXTENSIONS

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    if len(files) < 2:
        raise UserError(f"{folder} has {len(files)} image file(s): the parity gate needs at least 2")
    return torch.from_numpy(np.stack([spec.input_from_file(path) for path in files]))
