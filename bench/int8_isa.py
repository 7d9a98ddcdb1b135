"""INT8 accuracy by instruction set: every ONNX Runtime scheme, run on this CPU and on CPUs QEMU emulates.

ONNX Runtime picks its integer kernels from CPUID when it starts. A scheme that is exact on a VNNI host
(U8S8, weights at the full 8 bits) can lose accuracy on an AVX2 host, whose VPMADDUBSW sums pairs of
products into 16 bits with saturation: that is why `lightyard.cpu` chooses the scheme per instruction
family. QEMU's user-mode emulator (`qemu-x86_64 -cpu EPYC-Rome`, Debian's `qemu-user`) shows the same
Python, NumPy and ONNX Runtime binaries another CPU's CPUID, so ONNX Runtime runs that CPU's kernels,
saturation included: the accuracy printed for an emulated CPU is that CPU's. Its speed is not (emulation
is far slower), so nothing is timed there. The default CPUs: EPYC-Rome (Zen 2: AVX2, no VNNI) and
SandyBridge (AVX without AVX2: the `generic` family; older models stop on an illegal instruction in this
NumPy build). QEMU 7.2 emulates AVX2 but not AVX-512, so the AVX-512-without-VNNI family cannot be
checked this way.

The registered model's FP32 ONNX file is quantized here once per scheme (static QDQ, calibrated on the
train split as `lightyard quantize` does); every file is then run over the whole test split on each CPU,
in a torch-free worker (this script with --predict, ONNX Runtime and NumPy only, as the server runs).
For each CPU: the test errors of every scheme beside FP32's on that CPU, the candidates lightyard measures
on that family, those its chooser would keep (the most accurate on the validation split, within
SCHEME_TIE points; it takes the fastest of them, which only the real CPU can time, so the worst of them
is checked on test), and whether the
server would warn when handed the scheme chosen on this host. Target: ≤ FP32 errors + 5 per 10,000
test images.

    python train.py experiment=mnist data.download=false        # once: registers mnist-cnn@production
    python bench/int8_isa.py [--model mnist-cnn@production] [--cpus EPYC-Rome SandyBridge] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import host, host_line, save_figures

from lightyard.cpu import CANDIDATES, int8_warning, isa_family, scheme_candidates
from lightyard.errors import UserError
from lightyard.export.runtimes import latency_ms, load_onnx

# Modules that import torch are imported inside the functions only the parent runs: the worker starts
# under emulation, where importing torch alone would take minutes.

TARGET_PER_10K = 5  # errors per 10,000 test images over FP32 on the same CPU (the target)
X86_FAMILIES = ("avx512_vnni", "avx2", "generic")  # ONNX Runtime's x86 integer kernels differ by these
SCHEMES = tuple(dict.fromkeys(scheme for family in X86_FAMILIES for scheme in CANDIDATES[family]))
NUMPY_FLAGS = {"AVX512VNNI": "avx512_vnni", "AVX512BW": "avx512bw", "AVX2": "avx2"}
CHUNK = 500
THIS_CPU = "this CPU"


def cpuid_family() -> str:
    """The family CPUID reports to this process, as NumPy reads it: under QEMU, the emulated CPU's
    (/proc/cpuinfo still shows the host's). NumPy does not report AVX-VNNI or AMX."""
    from numpy._core._multiarray_umath import __cpu_features__

    return isa_family({flag for key, flag in NUMPY_FLAGS.items() if __cpu_features__.get(key)})


def worker(work: Path, timed: bool) -> None:
    """The worker: every model file in `work` over `work/inputs.npy`, predictions (and with `timed`, the
    median batch-1 latency) to stdout as JSON."""
    inputs = np.load(work / "inputs.npy")
    predictions, batch1_ms = {}, {}
    for path in sorted(work.glob("*.onnx")):
        run = load_onnx(path)  # one thread per core, as the chooser loads its candidates
        outputs = [run(inputs[start : start + CHUNK]).argmax(1) for start in range(0, len(inputs), CHUNK)]
        predictions[path.stem] = np.concatenate(outputs).tolist()
        if timed:
            batch1_ms[path.stem] = latency_ms(run, inputs, 1)  # as the chooser times its candidates
    print(json.dumps({"cpuid_family": cpuid_family(), "predictions": predictions, "batch1_ms": batch1_ms}))


def run_worker(work: Path, emulate: str | None) -> dict:
    """This script with --predict, natively (timed) or under `qemu-x86_64 -cpu EMULATE` (not timed).
    QEMU runs the base interpreter binary, not the venv's link, so the venv's packages and lightyard's
    source (an editable install's path entry) come through PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [os.path.realpath(sys.executable), str(Path(__file__).resolve()), "--predict", str(work)]
    command = ["qemu-x86_64", "-cpu", emulate, *command] if emulate else [*command, "--timed"]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    print(f"  {emulate or THIS_CPU}: {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(result.stdout.splitlines()[-1])


def quantize_all(model: str, work: Path, calibration_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """FP32 and one INT8 file per scheme into `work`, the validation then the test inputs beside them;
    returns the validation and test labels."""
    import torch

    from lightyard.compress.quantization import quantize_onnx
    from lightyard.registry import load
    from lightyard.sources import datamodule_from

    registered = load(model)  # checksums verified
    if not (registered.path / "model.onnx").is_file():
        raise UserError(f"{registered.tag} has no ONNX file: register a version exported to ONNX")
    datamodule = datamodule_from(registered.config["data"], registered.spec)
    calibration = datamodule.calibration_batches(calibration_batches)
    val_images, val_labels = zip(*datamodule.val_dataloader(), strict=True)
    images, labels = zip(*datamodule.test_dataloader(), strict=True)
    np.save(work / "inputs.npy", torch.cat([*val_images, *images]).numpy().astype(np.float32))
    shutil.copy2(registered.path / "model.onnx", work / "fp32.onnx")
    for index, scheme in enumerate(SCHEMES):
        quantize_onnx(work / "fp32.onnx", work / f"int8-{index}.onnx", "static", calibration, scheme)
    print(f"{registered.tag}: FP32 and {len(SCHEMES)} INT8 files ({calibration_batches} calibration batches)")
    return torch.cat(val_labels).numpy(), torch.cat(labels).numpy()


def judge(result: dict, val_labels: np.ndarray, labels: np.ndarray, family: str) -> dict:
    """One CPU's figures: test errors per scheme, the candidates measured on its family, those the
    chooser keeps (within SCHEME_TIE points of the most accurate on validation, as it chooses), and the
    target on the worst of them, on test."""
    from lightyard.compress.quantization import most_accurate

    split = len(val_labels)
    outputs = {name: np.asarray(values) for name, values in result["predictions"].items()}
    predictions = {name: values[split:] for name, values in outputs.items()}
    schemes = {}
    for index, scheme in enumerate(SCHEMES):
        predicted = predictions[f"int8-{index}"]
        schemes[scheme.name] = {
            "val_accuracy": float((outputs[f"int8-{index}"][:split] == val_labels).mean()),
            "errors": int((predicted != labels).sum()),
            "agreement": float((predicted == predictions["fp32"]).mean()),
            "batch1_ms": result["batch1_ms"].get(f"int8-{index}"),
        }
    fp32_errors = int((predictions["fp32"] != labels).sum())
    candidates = [scheme.name for scheme in scheme_candidates(family)]
    trials = [{"name": name, "val_accuracy": schemes[name]["val_accuracy"]} for name in candidates]
    kept = [trial["name"] for trial in most_accurate(trials)]
    worst = max(schemes[name]["errors"] for name in kept)
    allowed = TARGET_PER_10K * len(labels) / 10_000
    return {
        "family": family,
        "cpuid_family": result["cpuid_family"],
        "fp32_errors": fp32_errors,
        "schemes": schemes,
        "candidates": candidates,
        "kept": kept,
        "kept_worst_errors": worst,
        "target_errors": allowed,
        "target_met": worst - fp32_errors <= allowed,
    }


def add_host_choice(cpus: dict[str, dict]) -> None:
    """The scheme this host's chooser keeps (the fastest of the kept here); each CPU gets its errors
    there and the server's warning, as when a model quantized here is served there."""
    here = cpus[THIS_CPU]
    name = min(here["kept"], key=lambda kept: here["schemes"][kept]["batch1_ms"])
    scheme = next(scheme for scheme in SCHEMES if scheme.name == name)
    artifact = {"scheme": scheme.to_dict(), "isa": here["family"]}  # as the registry records it
    for figures in cpus.values():
        figures["host_choice"] = name
        figures["host_choice_errors"] = figures["schemes"][name]["errors"]
        figures["host_choice_warning"] = int8_warning(artifact, figures["family"])


def print_table(cpus: dict[str, dict]) -> None:
    names = list(cpus)
    print("\ntest errors on " + ", ".join(f"{name} ({cpus[name]['family']})" for name in names))
    print(f"  {'FP32':<36}" + "".join(f"{cpus[name]['fp32_errors']:>14} " for name in names))
    for scheme in SCHEMES:
        cells = []
        for name in names:
            mark = "*" if scheme.name in cpus[name]["kept"] else " "
            cells.append(f"{cpus[name]['schemes'][scheme.name]['errors']:>14}{mark}")
        print(f"  {'INT8 ' + scheme.name:<36}" + "".join(cells))
    print("  * measured and kept by the chooser on that family (it takes the fastest of those)")
    for name, figures in cpus.items():
        verdict = "met" if figures["target_met"] else "NOT MET"
        warning = figures["host_choice_warning"]
        print(
            f"{name}: candidates {', '.join(figures['candidates'])}; the worst kept makes "
            f"{figures['kept_worst_errors']} errors against FP32's {figures['fp32_errors']} "
            f"(target ≤ +{figures['target_errors']:g}: {verdict}). The scheme chosen on this host "
            f"({figures['host_choice']}) makes {figures['host_choice_errors']} there; the server "
            + ("warns" if warning else "does not warn")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-cnn@production", help="a registered model with ONNX")
    parser.add_argument("--cpus", nargs="*", default=["EPYC-Rome", "SandyBridge"], help="QEMU CPU models")
    parser.add_argument("--calibration-batches", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--predict", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.predict:
        return worker(args.predict, args.timed)
    if platform.machine() != "x86_64":
        sys.exit("error: this bench compares ONNX Runtime's x86 kernels: run it on an x86-64 host")
    if args.cpus and shutil.which("qemu-x86_64") is None:
        sys.exit("error: emulating other CPUs needs qemu-x86_64: apt-get install qemu-user (or --cpus alone)")
    machine = host("onnxruntime")
    print(host_line(machine), flush=True)
    with tempfile.TemporaryDirectory(prefix="int8-isa-") as tmp:
        work = Path(tmp)
        try:
            val_labels, labels = quantize_all(args.model, work, args.calibration_batches)
        except UserError as error:
            sys.exit(f"error: {error}")
        images = f"{len(val_labels)} validation and {len(labels)} test images"
        print(f"{len(SCHEMES) + 1} models over {images} on each CPU (emulated: slow):")
        results = {THIS_CPU: run_worker(work, None)} | {cpu: run_worker(work, cpu) for cpu in args.cpus}
    cpus = {
        name: judge(result, val_labels, labels, isa_family() if name == THIS_CPU else result["cpuid_family"])
        for name, result in results.items()
    }
    add_host_choice(cpus)
    print_table(cpus)
    if results[THIS_CPU]["cpuid_family"] != isa_family():
        print(f"note: CPUID reads {results[THIS_CPU]['cpuid_family']} here, /proc/cpuinfo {isa_family()}")
    save_figures(args.json, {"model": args.model, "host": machine, "cpu_isa": isa_family(), "cpus": cpus})


if __name__ == "__main__":
    main()
