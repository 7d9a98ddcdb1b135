"""Seconds that export + parity gate + registration add to the default `python train.py`.

Runs the default training twice as the user would (subprocesses, fresh run dirs, a temporary
`$BENTOML_HOME`), alternately with export and registration on (the default) and off, and prints the
mean wall time of each, the difference and the ratio. The per-step figures come from the run itself:
the export callback's own timings are in `export/export.json`. Target: ≤ 15 s added.

    python bench/export_overhead.py [--rounds 2]
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

ROOT = Path(__file__).resolve().parents[1]
OFF = ["export.enabled=false", "register.enabled=false"]
TARGET_SECONDS = 15.0


def run(overrides: list[str], workdir: Path, home: Path, name: str) -> float:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    command = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={workdir / name}", *overrides]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            for mode, overrides in (("off", OFF), ("on", [])):
                seconds = run(overrides, workdir, workdir / "bentoml", f"{mode}{round_}")
                times[mode].append(seconds)
                label = f"round {round_ + 1}/{args.rounds}: export+register {mode:<3}"
                print(f"{label} {seconds:6.1f} s", flush=True)
        steps = json.loads((workdir / "on0" / "export" / "export.json").read_text())["formats"]
    on, off = statistics.mean(times["on"]), statistics.mean(times["off"])
    print(f"\npython train.py, mean of {args.rounds}: {off:.1f} s without export+register, {on:.1f} s with")
    print(f"added: {on - off:+.1f} s (ratio {on / off:.2f}); target ≤ {TARGET_SECONDS:.0f} s added")
    per_format = ", ".join(f"{name} {entry['export_seconds']:.2f}" for name, entry in steps.items())
    print(f"export seconds per format: {per_format}")
    print("runs were written to a temporary folder and removed")


if __name__ == "__main__":
    main()
