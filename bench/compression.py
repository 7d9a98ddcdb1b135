"""Compression, side by side in one run: size, MACs, latency and accuracy of every variant.

Digits (real training, `python train.py` as a user runs it, in a temporary folder):
  dense     experiment=digits_int8: the default CNN, exported, static INT8 (ONNX Runtime QDQ U8S8 and torch)
  pruned    experiment=digits_pruned: 80% global L1 unstructured sparsity in 4 steps, fine-tuned
  channels  experiment=digits_pruned_channels from the dense checkpoint: half the channels removed
ResNet-18 at 224×224 (random weights: speed and size only): ONNX FP32, ONNX INT8 in the scheme chosen for
this host's instruction set (lightyard/cpu.py) beside the other schemes (U8S8 with and without 7-bit
weights, S8S8), torch INT8 (FX) and eager FP32. The host's CPU and instruction family come first.

The targets are outcomes (accuracy, latency, size), the same on every CPU: a CPU that falls short is
named beside the target (INT8 speedups are smaller without VNNI's dot products). Sparsity and MACs are
reported, not targeted: they restate `prune.amount` and the halved channels.

Every latency is the median of repeated calls after warm-up with the same thread count (`--threads`).
Ratios are FP32 ÷ compressed for speed and compressed ÷ FP32 for size.

    python bench/compression.py [--threads 2] [--json PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from common import ROOT, host, host_line, save_figures

from lightyard.compress.gate import predict
from lightyard.compress.measure import (
    Row,
    count_macs,
    eager_runner,
    measure,
    torch_threads,
)
from lightyard.compress.pruning import sparsity
from lightyard.compress.quantization import quantize_onnx, quantize_torch, torch_engine
from lightyard.compress.report import markdown_table, measure_variants, write_report
from lightyard.cpu import Int8Scheme, scheme_candidates
from lightyard.data import DigitsDataModule
from lightyard.export.runtimes import latency_ms, load_artifact
from lightyard.export.writers import write_onnx
from lightyard.sources import net_from_checkpoint

QUIET = ["logger=csv", "callbacks.rich_progress_bar=null", "callbacks.prediction_samples=null"]
TARGETS = {
    "digits.int8_acc_drop": ("≤", 0.5),
    "digits.int8_size_ratio": ("≤", 0.3),
    "resnet18.int8_speedup_b1": ("≥", 2.0),  # ONNX Runtime INT8 over FP32
    "resnet18.int8_speedup_b8": ("≥", 3.0),
    "resnet18.int8_vs_eager_b1": ("≥", 4.0),
    "resnet18.int8_size_ratio": ("≤", 0.27),
    "structured.latency_ratio_b32": ("≥", 1.4),
    "structured.acc_drop": ("≤", 1.0),
    "unstructured.acc_drop": ("≤", 1.0),
}


def train(overrides: list[str], run_dir: Path, home: Path) -> Path:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    command = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *QUIET, *overrides]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    print(f"  trained {' '.join(overrides)} in {time.perf_counter() - started:.0f} s", flush=True)
    return run_dir


def digits(work: Path, threads: int) -> tuple[list[Row], dict]:
    home = work / "bentoml"
    dense_dir = train(["experiment=digits_int8", "register.enabled=false"], work / "dense", home)
    pruned_dir = train(["experiment=digits_pruned", "register.enabled=false"], work / "pruned", home)
    parent = dense_dir / "checkpoints" / "best.ckpt"
    channels_overrides = [
        "experiment=digits_pruned_channels",
        f"prune.parent={parent}",
        "register.enabled=false",
    ]
    channels_dir = train(channels_overrides, work / "channels", home)

    datamodule = DigitsDataModule()
    datamodule.setup("test")
    test = list(datamodule.test_dataloader())
    dense = net_from_checkpoint(parent).net
    rows = measure_variants(dense, dense_dir / "export", test, threads=threads)
    by_name = {row.name: row for row in rows}
    dense_predictions = predict(eager_runner(dense), test)
    nets = {}
    for label, run_dir in (("pruned (unstructured)", pruned_dir), ("pruned (structured)", channels_dir)):
        net = nets[label] = net_from_checkpoint(run_dir / "checkpoints" / "best.ckpt").net
        row, _ = measure(label, eager_runner(net), net, test, dense_predictions, threads=threads)
        onnx = run_dir / "export" / "model.onnx"
        onnx_row, _ = measure(
            f"{label}, ONNX", load_artifact("onnx", onnx, threads), net, test, dense_predictions,
            file=onnx, threads=threads,
        )  # fmt: skip
        rows += [row, onnx_row]
        by_name[label], by_name[f"{label}, ONNX"] = row, onnx_row

    reference = by_name["FP32 eager"]
    int8, onnx = by_name["ONNX INT8"], by_name["ONNX FP32"]
    unstructured, structured = by_name["pruned (unstructured)"], by_name["pruned (structured)"]
    figures = {
        "digits": {
            "fp32_acc": reference.accuracy,
            "int8_acc": int8.accuracy,
            "int8_acc_drop": 100 * (onnx.accuracy - int8.accuracy),
            "int8_size_ratio": int8.file_bytes / onnx.file_bytes,
            "int8_top1_agreement": int8.top1_agreement,
            "torch_int8_acc_drop": 100 * (reference.accuracy - by_name["torch INT8"].accuracy),
        },
        "structured": {
            "mac_ratio": reference.macs / structured.macs,
            "parameter_ratio": structured.parameters / reference.parameters,
            "latency_ratio_b32": reference.p50_b32_ms / structured.p50_b32_ms,
            "latency_ratio_b1": reference.p50_b1_ms / structured.p50_b1_ms,
            "onnx_latency_ratio_b32": onnx.p50_b32_ms / by_name["pruned (structured), ONNX"].p50_b32_ms,
            "size_ratio": by_name["pruned (structured), ONNX"].file_bytes / onnx.file_bytes,
            "acc_drop": 100 * (reference.accuracy - structured.accuracy),
        },
        "unstructured": {
            "sparsity": sparsity(nets["pruned (unstructured)"])[0],  # of the conv and linear weights
            "sparsity_all_parameters": 1 - unstructured.nonzeros / unstructured.parameters,
            "acc_drop": 100 * (reference.accuracy - unstructured.accuracy),
            "latency_ratio_b32": reference.p50_b32_ms / unstructured.p50_b32_ms,
        },
    }
    return rows, figures


def resnet18(work: Path, threads: int, repeats: int) -> tuple[list[list[str]], dict]:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=1000).eval()
    images = torch.randn(16, 3, 224, 224)
    calibration = [torch.randn(8, 3, 224, 224) for _ in range(4)]
    fp32 = work / "resnet18.onnx"
    write_onnx(net, images[:2], fp32, None)
    variants = {"ONNX FP32": ("onnx", fp32)}
    chosen = scheme_candidates()[0]
    others = (Int8Scheme(), Int8Scheme(reduce_range=True), Int8Scheme(activation_type="int8"))
    for number, scheme in enumerate(dict.fromkeys((chosen, *others))):
        path = work / f"resnet18.int8-{number}.onnx"
        quantize_onnx(fp32, path, "static", calibration, scheme)
        variants[f"ONNX INT8 {scheme.name}" + (" (chosen)" if scheme == chosen else "")] = ("onnx", path)
    torch_int8 = work / "resnet18.int8.ts"
    quantize_torch(net, torch_int8, "static", images[:2], calibration)
    torch_name = f"torch INT8 (FX, {torch_engine()})"
    variants[torch_name] = ("torchscript", torch_int8)

    timings: dict[str, dict] = {}
    with torch_threads(threads):
        runners = {"eager FP32": eager_runner(net)}
        runners.update({name: load_artifact(fmt, path, threads) for name, (fmt, path) in variants.items()})
        for name, run in runners.items():
            timings[name] = {
                "b1": latency_ms(run, images.numpy(), 1, repeats),
                "b8": latency_ms(run, images.numpy(), 8, max(5, repeats // 3)),
                "bytes": variants[name][1].stat().st_size if name in variants else None,
            }
            print(f"  resnet18 {name}: {timings[name]['b1']:.1f} ms at batch 1", flush=True)
    fp32_t, int8_t = timings["ONNX FP32"], timings[f"ONNX INT8 {chosen.name} (chosen)"]
    s8s8 = timings[f"ONNX INT8 {Int8Scheme(activation_type='int8').name}"]
    rows = [
        [
            name,
            f"{t['bytes'] / 1e6:.1f} MB" if t["bytes"] else "–",
            f"{t['b1']:.1f} ms",
            f"{t['b8']:.1f} ms",
            f"{8000 / t['b8']:.0f} img/s",
            f"{fp32_t['b1'] / t['b1']:.2f}×",
            f"{fp32_t['b8'] / t['b8']:.2f}×",
        ]
        for name, t in timings.items()
    ]
    figures = {
        "macs": count_macs(net, images),
        "latency_ms": timings,
        "int8_speedup_b1": fp32_t["b1"] / int8_t["b1"],
        "int8_speedup_b8": fp32_t["b8"] / int8_t["b8"],
        "int8_vs_eager_b1": timings["eager FP32"]["b1"] / int8_t["b1"],
        "int8_size_ratio": int8_t["bytes"] / fp32_t["bytes"],
        "int8_scheme": chosen.name,
        "s8s8_speedup_b1": fp32_t["b1"] / s8s8["b1"],
        "s8s8_speedup_b8": fp32_t["b8"] / s8s8["b8"],
        "torch_int8_vs_eager_b1": timings["eager FP32"]["b1"] / timings[torch_name]["b1"],
        "onnx_fp32_vs_eager_b1": timings["eager FP32"]["b1"] / fp32_t["b1"],
    }
    return rows, figures


def targets(figures: dict, family: str) -> list[str]:
    """Every target beside its figure; one missed says on which CPU family it fell short."""
    lines = []
    for key, (sign, limit) in TARGETS.items():
        group, name = key.split(".")
        value = figures[group][name]
        met = value <= limit if sign == "≤" else value >= limit
        verdict = "met" if met else f"NOT MET on {family}"
        lines.append(f"{key:<30} {value:8.3f}   target {sign} {limit:g}   {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per latency (batch 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--out", type=Path, help="keep report.md, the plot and the runs here")
    args = parser.parse_args()
    started = time.perf_counter()
    machine = host("onnxruntime")
    print(host_line(machine), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("digits CNN:", flush=True)
        digit_rows, figures = digits(work, args.threads)
        print("ResNet-18, 224×224, random weights:", flush=True)
        resnet_rows, figures["resnet18"] = resnet18(work, args.threads, args.repeats)
        report = write_report(work, f"Digits CNN compression, {args.threads} threads", digit_rows)

    print(f"\nDigits CNN ({args.threads} threads; agreement with the dense FP32 eager network):\n")
    print(markdown_table(digit_rows))
    header = ["variant", "file", "p50 batch 1", "p50 batch 8", "throughput b8", "vs ONNX FP32 b1", "b8"]
    print(f"ResNet-18 at 224×224 ({args.threads} threads):\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(row) + " |" for row in resnet_rows))
    print("\n" + "\n".join(targets(figures, machine["isa_family"])))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    figures["host"], figures["cpu_isa"] = machine, machine["isa_family"]
    if args.out:
        print(f"runs, {report.name} and the plot are in {args.out}/")
    else:
        print("runs were written to a temporary folder and removed (--out DIR keeps them)")
    save_figures(args.json, figures)


if __name__ == "__main__":
    main()
