"""Does spreading a run over two nodes cost accuracy? The default digits run (30 epochs) in one process and
as two torchrun "nodes" on this machine (gloo), seed by seed; the target: the mean test accuracy over the
seeds within 0.5 points of one process's.

The multi-node tests (`make test-cluster`) check one seed within two test digits (0.74 points, what seeds
alone move it); with 270 test digits one digit is 0.37 points, so the target is judged over seeds here.

    python bench/multinode_accuracy.py [--seeds 0 1 2 42] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, free_port, host, host_line, save_figures

ARGS = ["trainer.accelerator=cpu", "export.enabled=false", "register.enabled=false",
        "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]  # fmt: skip
TARGET_POINTS = 0.5


def test_accuracy_of(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test/acc"]


def one_process(seed: int, run: Path, env: dict[str, str]) -> float:
    command = [sys.executable, str(ROOT / "train.py"), *ARGS, f"seed={seed}", f"hydra.run.dir={run}"]
    if subprocess.run(command, env=env, cwd=run.parent, capture_output=True).returncode:
        raise SystemExit(f"error: the one-process run of seed {seed} failed: see {run}/train.log")
    return test_accuracy_of(run)


def two_nodes(seed: int, run: Path, env: dict[str, str]) -> float:
    torchrun, port = str(Path(sys.executable).parent / "torchrun"), free_port()
    command = [torchrun, "--nnodes=2", "--nproc-per-node=1", "--master-addr=127.0.0.1",
               f"--master-port={port}", str(ROOT / "train.py"), *ARGS, "trainer.num_nodes=2",
               "trainer.devices=1", f"seed={seed}", f"hydra.run.dir={run}"]  # fmt: skip
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    nodes = [
        subprocess.Popen(
            [*command[:1], f"--node-rank={rank}", *command[1:]], env=env, cwd=run.parent, **quiet
        )
        for rank in (0, 1)
    ]
    if any(node.wait() for node in nodes):
        raise SystemExit(f"error: the two-node run of seed {seed} failed: see {run}/train.log")
    return test_accuracy_of(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 42])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    machine = host("lightning")
    print(host_line(machine), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BENTOML_HOME": str(Path(tmp) / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        for seed in args.seeds:
            started = time.perf_counter()
            single = one_process(seed, Path(tmp) / f"one-{seed}", env)
            middle = time.perf_counter()
            double = two_nodes(seed, Path(tmp) / f"two-{seed}", env)
            seconds = (middle - started, time.perf_counter() - middle)
            rows.append({"seed": seed, "one_process": single, "two_nodes": double, "seconds": seconds})
            print(f"seed {seed:>3}: one process {single:.4f} ({seconds[0]:.0f} s), two nodes {double:.4f} "
                  f"({seconds[1]:.0f} s)", flush=True)  # fmt: skip
    one = statistics.mean(row["one_process"] for row in rows)
    two = statistics.mean(row["two_nodes"] for row in rows)
    gap = 100 * (two - one)
    met = abs(gap) <= TARGET_POINTS
    print(f"mean over {len(rows)} seeds: one process {one:.4f}, two nodes {two:.4f}: {gap:+.2f} points")
    print(f"  [{'met' if met else 'NOT MET'}] two nodes within {TARGET_POINTS} points of one process")
    print("the runs were temporary and are removed")
    figures = {"host": machine, "seeds": rows, "one_process_mean": one, "two_nodes_mean": two}
    save_figures(args.json, {**figures, "gap_points": gap})


if __name__ == "__main__":
    main()
