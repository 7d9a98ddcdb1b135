"""`lightyard models ...`: list, show, compare, promote, verify and delete registered versions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lightyard.errors import UserError
from lightyard.registry.store import STAGES, ModelStore, Version, damaged_files, verify

SHOWN_METRICS = ("test/acc", "val/acc_best")


def add_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="the model registry (BentoML's model store)")
    sub = models.add_subparsers(dest="models_command", required=True)

    listing = sub.add_parser("list", help="every version, newest last")
    listing.add_argument("name", nargs="?", help="only versions of this model")
    listing.set_defaults(func=list_versions)

    show = sub.add_parser("show", help="metrics, config, files + checksums, lineage, stage of one version")
    show.add_argument("ref", help="name:version, name:latest or name@stage")
    show.set_defaults(func=show_version)

    compare = sub.add_parser("compare", help="two versions side by side: metrics, parity, config changes")
    compare.add_argument("first")
    compare.add_argument("second")
    compare.set_defaults(func=compare_versions)

    promote = sub.add_parser("promote", help="move a stage to a version (the previous holder drops to none)")
    promote.add_argument("ref")
    promote.add_argument("stage", choices=STAGES)
    promote.set_defaults(func=promote_version)

    verify = sub.add_parser("verify", help="re-hash every file of a version against its registered sha256")
    verify.add_argument("ref")
    verify.set_defaults(func=verify_version)

    delete = sub.add_parser("delete", help="remove a version from the store")
    delete.add_argument("ref")
    delete.add_argument("--force", action="store_true", help="also delete a version in production")
    delete.set_defaults(func=delete_version)

    for parser in (listing, show, compare, promote, verify, delete):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def summary(version: Version) -> dict[str, Any]:
    """The fields `list --json` promises for each version."""
    files = version.metadata.get("files", {})
    return {
        "tag": version.tag,
        "name": version.name,
        "version": version.version,
        "stage": version.stage,
        "path": str(version.path),
        "created": version.created.isoformat(timespec="seconds"),
        "metrics": version.metadata.get("metrics", {}),
        "formats": sorted(version.metadata.get("formats", {})),
        "bytes": sum(record["bytes"] for record in files.values()),
    }


def details(version: Version) -> dict[str, Any]:
    """`summary` plus the full metadata, the config decoded from its JSON text."""
    metadata = dict(version.metadata)
    metadata["config"] = json.loads(metadata.get("config") or "{}")
    return {**summary(version), "labels": version.labels, "metadata": metadata}


def list_versions(args: argparse.Namespace) -> None:
    store = ModelStore()
    versions = store.versions_of(args.name) if args.name else store.versions()
    if args.json:
        _print_json([summary(v) for v in versions])
        return
    if not versions:
        print(f"no models registered in {store.models}")
        return
    rows = [
        [
            v.tag,
            v.stage,
            *(_metric(v, name) for name in SHOWN_METRICS),
            ",".join(summary(v)["formats"]) or "-",
            _size(summary(v)["bytes"]),
            v.created.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for v in versions
    ]
    _table(["TAG", "STAGE", *(n.upper() for n in SHOWN_METRICS), "FORMATS", "SIZE", "CREATED (UTC)"], rows)
    print(f"\n{len(versions)} version(s) in {store.models}")


def show_version(args: argparse.Namespace) -> None:
    version = ModelStore().resolve(args.ref)
    info = details(version)
    if args.json:
        _print_json(info)
        return
    metadata = info["metadata"]
    print(f"{version.tag}   stage: {version.stage}   created: {info['created']}")
    print(f"path: {version.path}")
    print(f"git commit: {metadata.get('git_commit', 'unknown')}")
    print("\nmetrics:")
    for name, value in sorted(metadata.get("metrics", {}).items()):
        print(f"  {name:<24} {value:.4f}")
    print("\nformats (parity against the eager network):")
    for fmt, entry in metadata.get("formats", {}).items():
        print(f"  {fmt:<12} {entry['file']:<12} {_parity(entry)}{_how(entry)}")
    for fmt, reason in metadata.get("rejected", {}).items():
        print(f"  {fmt:<12} rejected: {reason}")
    print("\nfiles:")
    for name, record in metadata.get("files", {}).items():
        print(f"  {name:<16} {_size(record['bytes']):>9}  sha256 {record['sha256']}")
    lineage = metadata.get("lineage", {})
    print("\nlineage:")
    print(f"  parents: {', '.join(lineage.get('parents', [])) or 'none'}")
    for step in lineage.get("steps", []):
        print("  " + ", ".join(f"{key}={value}" for key, value in step.items()))
    preprocess = metadata.get("preprocess", {})
    print(
        f"\npreprocess: {preprocess.get('channels')}×{preprocess.get('height')}×{preprocess.get('width')}, "
        f"{preprocess.get('resize_policy')}, mean {preprocess.get('mean')}, std {preprocess.get('std')}, "
        f"{len(preprocess.get('class_names', []))} classes"
    )
    print("frameworks: " + ", ".join(f"{k} {v}" for k, v in version.frameworks.items()))
    print("\nconfig:")
    print(json.dumps(metadata["config"], indent=2, sort_keys=True))


def compare_versions(args: argparse.Namespace) -> None:
    store = ModelStore()
    first, second = store.resolve(args.first), store.resolve(args.second)
    a, b = details(first), details(second)
    metrics = sorted(set(a["metrics"]) | set(b["metrics"]))
    metric_rows = {
        name: {"first": a["metrics"].get(name), "second": b["metrics"].get(name)} for name in metrics
    }
    for row in metric_rows.values():
        both = row["first"] is not None and row["second"] is not None
        row["delta"] = row["second"] - row["first"] if both else None
    config_a, config_b = _flatten(a["metadata"]["config"]), _flatten(b["metadata"]["config"])
    config_changes = {
        key: {"first": config_a.get(key), "second": config_b.get(key)}
        for key in sorted(set(config_a) | set(config_b))
        if config_a.get(key) != config_b.get(key)
    }
    result = {
        "first": summary(first),
        "second": summary(second),
        "metrics": metric_rows,
        "parity": {
            fmt: {
                "first": _max_diff(a["metadata"], fmt),
                "second": _max_diff(b["metadata"], fmt),
            }
            for fmt in sorted(set(a["formats"]) | set(b["formats"]))
        },
        "config_changes": config_changes,
    }
    if args.json:
        _print_json(result)
        return
    print(f"first:  {first.tag} ({first.stage}, {a['created']})")
    print(f"second: {second.tag} ({second.stage}, {b['created']})\n")
    _table(
        ["METRIC", "FIRST", "SECOND", "DELTA"],
        [
            [name, _num(r["first"]), _num(r["second"]), _num(r["delta"], signed=True)]
            for name, r in metric_rows.items()
        ],
    )
    print()
    _table(
        ["FORMAT", "FIRST MAX |Δ|", "SECOND MAX |Δ|"],
        [[fmt, _num(r["first"], "e"), _num(r["second"], "e")] for fmt, r in result["parity"].items()],
    )
    print()
    if config_changes:
        _table(
            ["CONFIG", "FIRST", "SECOND"],
            [[key, json.dumps(c["first"]), json.dumps(c["second"])] for key, c in config_changes.items()],
        )
    else:
        print("configs are identical")


def promote_version(args: argparse.Namespace) -> None:
    promoted, demoted = ModelStore().set_stage(args.ref, args.stage)
    if args.json:
        _print_json({"promoted": summary(promoted), "demoted": [summary(v) for v in demoted]})
        return
    was = f" ({', '.join(v.tag for v in demoted)} moved to none)" if demoted else ""
    print(f"{promoted.tag} is now {args.stage}{was}")


def verify_version(args: argparse.Namespace) -> None:
    version = ModelStore().resolve(args.ref)
    problems = damaged_files(version)
    files = version.metadata.get("files", {})
    if args.json:
        _print_json({**summary(version), "verified": not problems, "problems": problems, "files": len(files)})
    verify(version, problems)
    if not args.json:
        print(f"{version.tag}: all {len(files)} files match their sha256 ({version.path})")


def delete_version(args: argparse.Namespace) -> None:
    store = ModelStore()
    version = store.resolve(args.ref)
    if version.stage == "production" and not args.force:
        raise UserError(f"{version.tag} is in production: promote another version first, or pass --force")
    store.delete(version)
    if args.json:
        _print_json({"deleted": summary(version)})
    else:
        print(f"deleted {version.tag} from {store.models}")


def _metric(version: Version, name: str) -> str:
    value = version.metadata.get("metrics", {}).get(name)
    return "-" if value is None else f"{value:.4f}"


def _parity(entry: dict) -> str:
    if "accuracy" in entry:  # compressed artifacts pass an accuracy gate, not logit parity
        gate = entry["accuracy"]
        return f"accuracy {gate['accuracy']:.4f} ({gate['drop']:+.2f} points against FP32)"
    parity = entry.get("parity", {})
    return (
        f"max |Δ| {parity.get('max_abs_diff', float('nan')):.1e}, top-1 {parity.get('top1_agreement', 0):.0%}"
    )


def _how(entry: dict) -> str:
    extra = {key: entry[key] for key in ("method", "opset", "engine") if key in entry}
    if "scheme" in entry:
        extra["scheme"] = entry["scheme"]["name"]
    if "isa" in entry:
        extra["chosen and gated on"] = entry["isa"]
    return "".join(f", {key} {value}" for key, value in extra.items())


def _max_diff(metadata: dict, fmt: str) -> float | None:
    return metadata.get("formats", {}).get(fmt, {}).get("parity", {}).get("max_abs_diff")


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _num(value: float | None, style: str = "f", signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.2e}" if style == "e" else f"{value:.4f}"


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
