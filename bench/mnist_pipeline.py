"""The whole pipeline on MNIST, as a user runs it, in one table.

Every model goes through `python train.py`, `lightyard quantize`, the registry and `bentoml serve`:
  teacher           experiment=mnist (registered mnist-cnn@production)
  scratch student   experiment=mnist_cnn_student
  distilled student experiment=mnist_cnn_kd (the teacher loaded from the registry)
  pruned teacher    experiment=mnist_pruned_channels (30% of the channels removed, fine-tuned)
  INT8              lightyard quantize of the teacher and the distilled student (ONNX Runtime and torch)
Per row: test errors of 10,000, parameters, MACs, artifact size, latency in its runtime at batch 1 and 64.
Then the teacher is served and 1,000 test images are sent as PNG files: the served accuracy beside the
teacher's own (eager) accuracy on the same images. Before training, the training loader's images/s is
printed next to the training step's, so the bound is visible. Hinton et al.'s MLP pair
(bench/mnist_distill.py) runs last, unless --no-hinton. Each part's time is printed.

    python bench/mnist_pipeline.py [--quick] [--seeds 3] [--no-hinton] [--json PATH] [--keep DIR]

--quick: 2 epochs for the teachers, 1 for the students and the fine-tuning, 1 seed, 200 served images.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from common import DATA, ROOT, Server, ensure_mnist, free_port, host, host_line, save_figures
from mnist_distill import TEST_IMAGES, quiet_training, study
from PIL import Image

from lightyard.compress.measure import count_macs, parameter_counts
from lightyard.config import compose_train, instantiate
from lightyard.export.runtimes import latency_ms
from lightyard.registry import ModelStore, load

BIN = Path(sys.executable).parent
RUN = ["logger=csv", "callbacks.rich_progress_bar=null", "data.download=false", f"data.root={DATA}"]


class Timer:
    def __init__(self) -> None:
        self.parts: dict[str, float] = {}

    def run(self, part: str, command: list[str], env: dict, cwd: Path) -> None:
        started = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        self.parts[part] = time.perf_counter() - started
        print(f"  {part}: {self.parts[part]:.0f} s", flush=True)


def loader_and_step_rates(batches: int = 40) -> dict:
    """Images/s of the training loader alone (its configured workers) and of the training step alone
    (forward, backward, optimizer step on one batch held in memory), for experiment=mnist."""
    cfg = compose_train(["experiment=mnist", *RUN[2:]], Path(tempfile.mkdtemp()))
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    images, labels = next(loader)
    started = time.perf_counter()
    for _ in range(batches):
        next(loader)
    loader_rate = batches * len(images) / (time.perf_counter() - started)
    from lightyard.models import build_net

    net = build_net(cfg.model.net, datamodule.spec).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for step in range(batches + 5):
        if step == 5:
            started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    step_rate = batches * len(images) / (time.perf_counter() - started)
    return {"loader_ips": loader_rate, "step_ips": step_rate, "workers": cfg.data.num_workers}


def row(label: str, ref: str, fmt: str, store: ModelStore, images: np.ndarray) -> dict:
    model = load(ref, store=store)
    entry = model.metadata["formats"][fmt]
    accuracy = entry["accuracy"]["accuracy"] if "accuracy" in entry else model.metadata["metrics"]["test/acc"]
    net = model.net()
    run = model.runner(fmt, threads=2)
    return {
        "model": label,
        "ref": model.tag,
        "format": fmt,
        "errors": round(TEST_IMAGES * (1 - accuracy)),
        "parameters": parameter_counts(net)[0],
        "macs": count_macs(net, torch.from_numpy(images[:1])),
        "bytes": model.file(fmt).stat().st_size,
        "b1_ms": latency_ms(run, images, 1),
        "b64_ms": latency_ms(run, images, 64, repeats=10),
        "scheme": entry.get("scheme", {}).get("name") or entry.get("engine"),
    }


def served_accuracy(store: ModelStore, ref: str, count: int, work: Path) -> dict:
    """The registered model served by `bentoml serve`, `count` test images posted as PNG files; beside it,
    the same version's eager network on the same images (its own preprocessing of the same files)."""
    pngs, labels = test_pngs(count)
    model = load(ref, store=store)
    net = model.net().eval()
    with torch.no_grad():
        inputs = torch.from_numpy(np.stack([model.spec.input_from_file(png) for png in pngs]))
        offline = net(inputs).argmax(1).tolist()
    port = free_port()
    env = {**os.environ, "LIGHTYARD_MODEL": model.tag, "BENTOML_HOME": str(store.home)}
    server = Server(
        [str(BIN / "bentoml"), "serve", "--port", str(port)], env, ROOT, work / "serve.log",
        f"http://127.0.0.1:{port}", "/readyz",
    )  # fmt: skip
    try:
        with httpx.Client(timeout=60) as client:
            served = [
                int(client.post(f"{server.url}/predict", files={"image": ("d.png", png, "image/png")})
                    .json()["predictions"][0]["class"])
                for png in pngs
            ]  # fmt: skip
    finally:
        server.stop()
    return {
        "images": count,
        "served_acc": float(np.mean(np.array(served) == labels)),
        "offline_acc": float(np.mean(np.array(offline) == labels)),
        "agreement": float(np.mean(np.array(served) == offline)),
    }


def pipeline(work: Path, quick: bool, served_images: int) -> tuple[list[dict], dict, dict]:
    timer = Timer()
    home = work / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    teacher_epochs = ["trainer.max_epochs=2"] if quick else []
    short = ["trainer.max_epochs=1"] if quick else []
    train = [sys.executable, str(ROOT / "train.py"), *RUN]
    steps = [
        ("teacher", ["experiment=mnist", *teacher_epochs]),
        ("scratch student", ["experiment=mnist_cnn_student", *short]),
        ("distilled student", ["experiment=mnist_cnn_kd", *short]),
        ("pruned teacher", ["experiment=mnist_pruned_channels", *short]),
    ]
    for part, overrides in steps:
        timer.run(part, [*train, *overrides, f"hydra.run.dir={work / part.replace(' ', '_')}"], env, work)
    for name in ("mnist-cnn@production", "mnist-cnn-student-kd:latest"):
        out = work / f"quantized-{name.split('@')[0].split(':')[0]}"
        command = [str(BIN / "lightyard"), "quantize", name, "--out", str(out)]
        timer.run(f"quantize {name}", command, env, work)
    store = ModelStore(home)
    teacher = next(v for v in store.versions("mnist-cnn") if v.stage == "production").tag
    teacher_int8 = store.versions("mnist-cnn")[-1].tag  # the newest: the quantized child
    kd, kd_int8 = (version.tag for version in store.versions("mnist-cnn-student-kd"))
    images = test_inputs(load(teacher, store=store), 64)
    table = [
        row(label, ref, fmt, store, images)
        for label, ref, fmt in (
            ("teacher", teacher, "onnx"),
            ("scratch student", "mnist-cnn-student:latest", "onnx"),
            ("distilled student", kd, "onnx"),
            ("pruned teacher", "mnist-cnn-channels:latest", "onnx"),
            ("teacher INT8, ONNX Runtime", teacher_int8, "onnx-int8"),
            ("teacher INT8, torch", teacher_int8, "torchscript-int8"),
            ("distilled student INT8, ONNX Runtime", kd_int8, "onnx-int8"),
            ("distilled student INT8, torch", kd_int8, "torchscript-int8"),
        )
    ]
    started = time.perf_counter()
    serving = served_accuracy(store, teacher, served_images, work)
    timer.parts[f"serve {served_images} PNGs"] = time.perf_counter() - started
    return table, serving, timer.parts


def test_pngs(count: int) -> tuple[list[bytes], list[int]]:
    """The first `count` official test images as PNG files, and their labels."""
    from torchvision.datasets import MNIST

    test = MNIST(str(DATA), train=False, download=False)
    pngs = []
    for pixels in test.data[:count].numpy():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs, test.targets[:count].tolist()


def test_inputs(model, count: int) -> np.ndarray:
    return np.stack([model.spec.input_from_file(png) for png in test_pngs(count)[0]])


def print_table(table: list[dict]) -> None:
    header = ["model", "errors /10k", "params", "MACs", "file", "b1", "b64", "scheme"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in table:
        cells = [
            r["model"], str(r["errors"]), f"{r['parameters']:,}", f"{r['macs'] / 1e6:.2f} M",
            f"{r['bytes'] / 1e3:.0f} kB", f"{r['b1_ms']:.3f} ms", f"{r['b64_ms']:.2f} ms", r["scheme"] or "–",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test of the whole bench")
    parser.add_argument("--seeds", type=int, default=3, help="Hinton study seeds")
    parser.add_argument("--no-hinton", action="store_true", help="skip Hinton et al.'s MLP pair")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", type=Path, help="keep the runs and the registry in this folder")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    started = time.perf_counter()
    ensure_mnist()
    machine = host("onnxruntime", "bentoml")
    print(f"{host_line(machine)}; {'--quick' if args.quick else 'full'} run", flush=True)
    rates = loader_and_step_rates()
    bound = "the loader" if rates["loader_ips"] < rates["step_ips"] else "the training step"
    print(
        f"experiment=mnist: loader {rates['loader_ips']:,.0f} images/s ({rates['workers']} workers), "
        f"training step {rates['step_ips']:,.0f} images/s: {bound} bounds training"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        table, serving, parts = pipeline(work, args.quick, 200 if args.quick else 1000)
        hinton = None
        if not args.no_hinton:
            epochs = ["trainer.max_epochs=1"] if args.quick else []
            hinton_started = time.perf_counter()
            quiet_training()
            os.environ["BENTOML_HOME"] = str(work / "bentoml")
            seeds = list(range(1 if args.quick else args.seeds))
            hinton = study("mlp", seeds, work, epochs, epochs)
            parts["Hinton MLP pair"] = time.perf_counter() - hinton_started
    print()
    print_table(table)
    print(
        f"\nserved: {serving['served_acc']:.4f} on {serving['images']} test PNGs through bentoml serve; the "
        f"same teacher offline: {serving['offline_acc']:.4f} (agreement {serving['agreement']:.2%})"
    )
    by_model = {r["model"]: r for r in table}
    teacher, pruned = by_model["teacher"], by_model["pruned teacher"]
    figures = {
        "host": machine,
        "cpu_isa": machine["isa_family"],
        "quick": args.quick,
        "loader_ips": rates["loader_ips"],
        "step_ips": rates["step_ips"],
        "teacher_errors": teacher["errors"],
        "fp32_errors": teacher["errors"],
        "scratch_errors": by_model["scratch student"]["errors"],
        "kd_errors": by_model["distilled student"]["errors"],
        "pruned_errors": pruned["errors"],
        "pruned_mac_ratio": teacher["macs"] / pruned["macs"],
        "int8_errors": by_model["teacher INT8, ONNX Runtime"]["errors"],
        "served_acc": serving["served_acc"],
        "offline_acc": serving["offline_acc"],
        "table": table,
        "parts_s": parts,
    }
    if hinton:
        figures["hinton"] = {key: hinton[key] for key in ("teacher_errors", "scratch_errors", "kd_errors")}
        figures["hinton"] |= {"gap_closed": hinton["gap_closed"], "diff_std": hinton["diff_std"],
                              "seeds": hinton["seeds"]}  # fmt: skip
        figures["kd_gap_closed"], figures["kd_diff_std"] = hinton["gap_closed"], hinton["diff_std"]
    print("\n" + "\n".join(f"  {part}: {seconds:.0f} s" for part, seconds in parts.items()))
    print(f"{time.perf_counter() - started:.0f} s in all")
    print(f"runs and registry in {args.keep}/" if args.keep else "runs were in a temporary folder, removed")
    save_figures(args.json, figures)


if __name__ == "__main__":
    main()
