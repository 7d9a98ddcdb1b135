"""`lightyard quantize REF|CKPT`: INT8 variants of a registered model or a checkpoint, gated and reported.

A registered model (`name:version`, `name@production`) is verified, its files are copied into a work
folder (`quantized/<name>-<version>/` unless `--out`), the INT8 artifacts are added there, and the
result is registered as a new version of the same name whose lineage names the parent. A checkpoint's
INT8 artifacts go into its run's `export/` folder.
Calibration and test images come from the data config the model was trained with.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lightyard.errors import UserError
from lightyard.export.formats import quantizable_runtimes

if TYPE_CHECKING:  # torch loads only when the command runs
    from lightyard.registry import RegisteredModel
    from lightyard.sources import ModelSource


def add_command(commands: argparse._SubParsersAction) -> None:
    quantize = commands.add_parser(
        "quantize", help="INT8 ONNX Runtime and torch-native variants of a model, gated on its test split"
    )
    quantize.add_argument("model", help="a registry reference (digits-cnn@production) or a checkpoint path")
    quantize.add_argument("--mode", choices=("static", "dynamic"), default="static")
    quantize.add_argument(
        "--calibration-batches", type=int, default=32, help="train-split batches for static calibration"
    )
    runtimes = ", ".join(quantizable_runtimes())
    quantize.add_argument(
        "--runtimes", default=runtimes.replace(" ", ""), help=f"comma-separated: {runtimes}"
    )
    quantize.add_argument(
        "--max-drop", type=float, default=1.0, help="accuracy points an INT8 model may lose (default 1)"
    )
    scheme = "(default: chosen for this CPU's instruction set)"
    quantize.add_argument("--activation-type", choices=("uint8", "int8"), help=f"ONNX Runtime {scheme}")
    quantize.add_argument("--weight-type", choices=("uint8", "int8"), help=f"ONNX Runtime {scheme}")
    quantize.add_argument("--per-channel", action=argparse.BooleanOptionalAction, help=f"weights {scheme}")
    quantize.add_argument(
        "--reduce-range", action=argparse.BooleanOptionalAction, help=f"7-bit weights {scheme}"
    )
    quantize.add_argument("--threads", type=int, default=2, help="threads for the report's timings")
    quantize.add_argument("--out", type=Path, help="where the artifacts and report.md go")
    quantize.add_argument(
        "--no-register", action="store_true", help="for a registry model: do not register the result"
    )
    quantize.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from lightyard.compress.quantization import check_mode, quantize_export, quantize_lineage
    from lightyard.compress.report import markdown_table, measure_variants, write_report
    from lightyard.cpu import isa_family, scheme_candidates
    from lightyard.sources import datamodule_from, open_model

    check_mode(args.mode)
    source = open_model(args.model)
    trained, out = source.trained, _out_dir(source, args.out)
    datamodule = datamodule_from(source.data, trained.spec)
    static = args.mode == "static"
    calibration = datamodule.calibration_batches(args.calibration_batches) if static else []
    test = list(datamodule.test_dataloader())
    if source.registered is not None:
        _copy_version(source.registered, out)
    schemes = scheme_candidates(
        activation_type=args.activation_type,
        weight_type=args.weight_type,
        per_channel=args.per_channel,
        reduce_range=args.reduce_range,
    )
    print(f"host CPU: {isa_family()}; ONNX Runtime scheme candidates: {', '.join(s.name for s in schemes)}")
    report = quantize_export(
        trained.net,
        trained.spec,
        out,
        net_config=trained.net_config,
        mode=args.mode,
        calibration=calibration,
        val=list(datamodule.val_dataloader()),
        test=test,
        max_drop=args.max_drop,
        runtimes=[name.strip() for name in args.runtimes.split(",") if name.strip()],
        schemes=schemes,
    )
    rows = measure_variants(trained.net, out, test, threads=args.threads)
    path = write_report(out, f"INT8 ({args.mode}) of {source.name}, {args.threads} threads", rows)
    print(markdown_table(rows))
    results = report.int8
    for name, entry in results.items():
        scheme = f" ({entry['scheme']['name']}, chosen on {entry['isa']})" if "scheme" in entry else ""
        print(f"{name:<18} {'passed' if entry['passed'] else entry.get('error', 'failed')}{scheme}")
    print(f"artifacts in {out}/, report: {path}")
    if not any(entry["passed"] for entry in results.values()):
        raise UserError("no INT8 artifact passed the accuracy gate: see the lines above")
    if source.registered is not None and not args.no_register:
        lineage_step = quantize_lineage(args.mode, len(calibration), args.max_drop, report)
        _register(source.registered, out, lineage_step)


def _out_dir(source: ModelSource, out: Path | None) -> Path:
    """`--out`, else a checkpoint's run `export/` folder, else `quantized/<name>-<version>/`."""
    if out is not None:
        return out
    if source.run_dir is not None:
        return source.run_dir / "export"
    return Path("quantized") / source.name.replace(":", "-")


def _copy_version(registered: RegisteredModel, out: Path) -> None:
    """The registered files and an `export.json` rebuilt from its metadata: an export folder again."""
    from lightyard.export.manifest import ExportReport

    out.mkdir(parents=True, exist_ok=True)
    for path in registered.path.iterdir():
        if path.is_file() and path.name != "model.yaml":
            shutil.copy2(path, out / path.name)
    formats = dict(registered.metadata.get("formats", {}))
    ExportReport(out, dict(registered.metadata["net"]), formats).save()


def _register(registered: RegisteredModel, out: Path, lineage_step: dict) -> None:
    from lightyard.registry import ModelStore, register_export

    store = ModelStore()
    version = register_export(
        out,
        registered.version.name,
        metrics=dict(registered.metadata.get("metrics", {})),
        config=registered.config,
        lineage={"parents": [registered.tag], "steps": [lineage_step]},
        store=store,
    )
    print(f"registered as {version.tag} (parent {registered.tag}): lightyard models show {version.tag}")
