"""Optuna sweeps, side by side in one run: what pruning saves, what a second worker gains, what the
sweeper itself costs.

Every figure comes from the real command, `python train.py hparams_search=optuna …`, run as a user runs
it: a subprocess whose cwd is a fresh temporary folder (the study's SQLite file and the trials' run dirs
land in its logs/), with a temporary $BENTOML_HOME and one intra-op thread per trial.

1. Pruning pays: maximise `val/acc_best` of `hparams_search=mnist_mlp` (an MLP on a fixed 4,000-image
   MNIST subset, 3,000 validation images: unlike digits', its best value does not saturate) with 30 TPE
   trials of 12 epochs, with the `median` pruner and without pruning (`pruner=none`), for 3 sampler seeds.
   Targets: the pruned sweeps' best (mean over seeds) within one seed std of the unpruned ones', ≤ 0.5 of
   the unpruned trial-epochs and ≤ 0.6 of their wall time (both summed over the seeds).
2. Parallel pays: 20 trials of 12 epochs of the same study with `n_jobs=1` and `n_jobs=2`; whole-command
   wall time ratio ≤ 0.6.
3. Overhead: 20 trials of 1 epoch (`n_jobs=1`): the share of the sweeper's wall time spent outside
   trials, 1 − trial_s / wall_s from optimization_results.yaml, ≤ 0.05.

Ratios are what to compare between machines; seconds move with the CPU, which is printed first. The full
run takes about 35 minutes on 2 cores (MNIST is unpacked into data/ first if it is not there); `--quick`
(4 trials, 1 seed, 3 epochs) about 2 minutes, as a smoke test whose ratios mean little. Targets are
printed as met / NOT met; the exit status is 0 either way.

    python bench/sweeps.py [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from common import DATA, ROOT, ensure_mnist, host, host_line, save_figures

from lightyard.sweeps.study import EPOCHS

SEARCH = ["hparams_search=mnist_mlp", "data.download=false", f"data.root={DATA}"]
OBJECTIVE, DIRECTION = "val/acc_best", "maximize"  # what conf/hparams_search/mnist_mlp.yaml optimises
# Trials as cheap as a user can make them without losing TensorBoard: no test, export or registration, and
# nothing drawn for a terminal. The callbacks' null leaves Lightning's own Rich progress bar and model
# summary on (Lightning picks them when rich is installed), hence the two trainer flags. What stays, and is
# part of every trial's cost: the TensorBoard logger with the graph traced at fit start and the
# confusion-matrix figure after each validation epoch (ClassifierModule draws both whenever TensorBoard is
# on: no setting in conf/ turns them off alone), the LR monitor, and last.ckpt / best.ckpt after each epoch.
CHEAP = [
    "export.enabled=false",
    "register.enabled=false",
    "test=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.prediction_samples=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
# Neither train.py nor conf/ sets a thread count: torch takes its intra-op threads from OMP_NUM_THREADS
# when it is imported (MKL's for the BLAS it calls), so one thread per trial, n_jobs=2 using two cores.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# A parallel run's trials all cost the same: the batch size (the one searched key that changes a trial's
# cost) is fixed on the command line, so not searched. Otherwise the two workers' seeds (the sweeper offsets
# them) would draw other batch sizes than n_jobs=1 does, and the ratio would measure the draw, not the
# second worker.
EQUAL_COST = ["data.batch_size=64"]


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the full bench, or `--quick`'s smoke test."""

    trials: int  # pruning: trials per sweep
    epochs: int  # pruning and parallel: epochs per trial (trainer.max_epochs)
    seeds: tuple[int, ...]  # pruning: sampler seeds, each run with and without pruning
    parallel_trials: int
    overhead_trials: int  # of one epoch each


# The pruner, chosen on sampler seeds 10 and 11, not on the seeds the bench reports (0, 1, 2): the same 30
# trials of 12 epochs with each pruner, as real sweeps (the sampler reacts to what is pruned). Unpruned
# bests 0.9570 / 0.9540 (360 trial-epochs each); best and trial-epochs ratio with each pruner:
#   `median`, the preset: MedianPruner(n_startup_trials=3, n_warmup_steps=1)  0.9580 / 0.9563  0.50 / 0.54
#   MedianPruner(5, 1)                                                         0.9580 / 0.9563  0.50 / 0.59
#   MedianPruner(5, 2)                                                         0.9580 / 0.9563  0.54 / 0.63
#   SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)                0.9560 / 0.9550  0.47 / 0.54
# A first run of this bench with MedianPruner(5, 0) (chosen by replaying recorded trials offline, which
# ignores the sampler's reaction) spent 0.38 of the epochs but lost 0.0017 against 0.0010 of seed spread.
PRUNER_NAME = "median (3 start-up trials, 1 warm-up epoch)"
PRUNER = "median"
# 12 epochs: under the cosine schedule (T_max = max_epochs) the trials' val/acc_best still orders them at
# the end (0.93 to 0.957 on seed 10), and a trial costs about 10 s on one thread.
FULL = Sizes(trials=30, epochs=12, seeds=(0, 1, 2), parallel_trials=20, overhead_trials=20)
QUICK = Sizes(trials=4, epochs=3, seeds=(0,), parallel_trials=4, overhead_trials=4)
TARGETS = {"epochs_ratio": 0.5, "wall_ratio": 0.6, "parallel_wall_ratio": 0.6, "overhead_share": 0.05}


@dataclass
class Sweep:
    """What one sweep command took and left: its wall time, optimization_results.yaml and the study."""

    wall_s: float  # the whole command, interpreter start to exit
    results: dict[str, Any]  # optimization_results.yaml: wall_s, trial_s, best_value, states, …
    epochs: int  # validation epochs its trials ran (their `epochs` attributes), pruned ones included

    @property
    def best(self) -> float:
        """The best completed trial's value; NaN if every trial was pruned or failed (then no target
        can be met, and the summary shows why)."""
        return float(self.results.get("best_value", "nan"))

    @property
    def pruned(self) -> int:
        return int(self.results["states"].get("PRUNED", 0))

    def figures(self) -> dict[str, Any]:
        """For the JSON: both wall times (the command's adds Python and Hydra start-up)."""
        keys = ("wall_s", "trial_s", "best_value", "best_trial", "states")
        sweeper = {f"sweeper_{k}" if k.endswith("_s") else k: self.results.get(k) for k in keys}
        return {"command_wall_s": round(self.wall_s, 3), "trial_epochs": self.epochs, **sweeper}


def settings(trials: int, epochs: int, pruner: str = "none", seed: int = 0, jobs: int = 1) -> list[str]:
    """A scenario's sweep overrides; every scenario seeds its sampler, so that reruns sample alike."""
    return [
        f"hydra.sweeper.n_trials={trials}",
        f"trainer.max_epochs={epochs}",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"hydra.sweeper.n_jobs={jobs}",
    ]


def sweep(cwd: Path, study: str, overrides: list[str]) -> Sweep:
    """Run the sweep command in `cwd` (its logs/ lands there) and read back what it wrote; the first
    failing command ends the bench with its log's tail, since its figures would mean nothing."""
    cwd.mkdir(parents=True)
    command = [sys.executable, str(ROOT / "train.py"), *SEARCH, *CHEAP]
    command += [f"hydra.sweeper.study_name={study}", *overrides]
    env = {**os.environ, **THREADS, "BENTOML_HOME": str(cwd / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    log = cwd / "sweep.log"
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        sys.exit(f"{shlex.join(command)}\nfailed (exit {result.returncode}) in {cwd}:\n{tail}")
    (results_file,) = (cwd / "logs" / "multirun").glob("*/optimization_results.yaml")
    storage = f"sqlite:///{cwd / 'logs' / 'optuna' / f'{study}.db'}"
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    epochs = sum(int(trial.user_attrs.get(EPOCHS, 0)) for trial in trials)
    return Sweep(wall, yaml.safe_load(results_file.read_text()), epochs)


def say(label: str, run: Sweep) -> None:
    """One progress line per command, as soon as it ends: a full run is long to watch in silence."""
    states = " ".join(f"{n} {state.lower()}" for state, n in sorted(run.results["states"].items()))
    print(
        f"  {label:<26} {run.wall_s:6.1f} s   best {OBJECTIVE} {run.best:.4f}   "
        f"{run.epochs:4d} trial-epochs   {states}",
        flush=True,
    )


def pruning(work: Path, sizes: Sizes) -> dict[str, Any]:
    """Scenario 1. Per seed the pruned and unpruned sweeps run back to back (one seed gives both the
    same random start-up trials), so that a change in the machine's load hits both alike."""
    print(f"pruning: {sizes.trials} TPE trials × {sizes.epochs} epochs, {PRUNER_NAME} vs none", flush=True)
    runs: dict[str, list[Sweep]] = {"pruned": [], "unpruned": []}
    for seed in sizes.seeds:
        for label, pruner in (("unpruned", "none"), ("pruned", PRUNER)):
            overrides = settings(sizes.trials, sizes.epochs, pruner=pruner, seed=seed)
            run = sweep(work / f"{label}-seed{seed}", f"bench-{label}-seed{seed}", overrides)
            runs[label].append(run)
            say(f"seed {seed} {label}", run)
    return pruning_figures(runs)


def pruning_figures(runs: dict[str, list[Sweep]]) -> dict[str, Any]:
    """Means over seeds for the best values; sums over seeds for the costs, so the ratios weigh each
    seed by what it cost."""
    figures: dict[str, Any] = {"direction": DIRECTION, "objective": OBJECTIVE, "pruner": PRUNER}
    for label, sweeps in runs.items():
        figures[label] = {
            "best": statistics.mean(run.best for run in sweeps),
            "best_per_seed": [run.best for run in sweeps],
            "trial_epochs_per_seed": [run.epochs for run in sweeps],
            "wall_s_per_seed": [round(run.wall_s, 3) for run in sweeps],
            "pruned_trials_per_seed": [run.pruned for run in sweeps],
            "runs": [run.figures() for run in sweeps],
        }
    unpruned = figures["unpruned"]["best_per_seed"]
    figures["seed_std"] = statistics.stdev(unpruned) if len(unpruned) > 1 else 0.0
    figures["seed_std_of"] = "the unpruned sweeps' best values over the seeds (sample std, n − 1)"
    figures["epochs_ratio"] = sum(r.epochs for r in runs["pruned"]) / sum(r.epochs for r in runs["unpruned"])
    figures["wall_ratio"] = sum(r.wall_s for r in runs["pruned"]) / sum(r.wall_s for r in runs["unpruned"])
    return figures


def parallel(work: Path, sizes: Sizes) -> dict[str, Any]:
    """Scenario 2: the same study, equal-cost trials, one worker vs two worker processes."""
    print(f"parallel: {sizes.parallel_trials} trials × {sizes.epochs} epochs, n_jobs=1 vs 2", flush=True)
    runs = {}
    for jobs in (1, 2):
        overrides = [*settings(sizes.parallel_trials, sizes.epochs, jobs=jobs), *EQUAL_COST]
        runs[jobs] = sweep(work / f"jobs{jobs}", f"bench-parallel-jobs{jobs}", overrides)
        say(f"n_jobs={jobs}", runs[jobs])
    return {
        "parallel": {f"n_jobs_{jobs}": run.figures() for jobs, run in runs.items()},
        "parallel_wall_ratio": runs[2].wall_s / runs[1].wall_s,
    }


def overhead(work: Path, sizes: Sizes) -> dict[str, Any]:
    """Scenario 3: the shortest trials a sweep can have, where the sweeper's own work between them
    (ask, tell, heartbeat, progress) weighs most; the same search space, seeded."""
    print(f"overhead: {sizes.overhead_trials} trials × 1 epoch, n_jobs=1", flush=True)
    run = sweep(work / "overhead", "bench-overhead", settings(sizes.overhead_trials, epochs=1))
    say("1-epoch trials", run)
    return {"overhead": run.figures(), "overhead_share": 1 - run.results["trial_s"] / run.results["wall_s"]}


def best_bound(figures: dict[str, Any]) -> float:
    """The worst best value the pruned sweeps may have: the unpruned best, one seed std worse."""
    spread = figures["seed_std"] if DIRECTION == "minimize" else -figures["seed_std"]
    return figures["unpruned"]["best"] + spread


def targets(figures: dict[str, Any]) -> dict[str, bool]:
    """Each target as a boolean, for the JSON; `report` prints them beside their figures."""
    best, bound = figures["pruned"]["best"], best_bound(figures)
    within = best <= bound if DIRECTION == "minimize" else best >= bound
    met = {key: figures[key] <= limit for key, limit in TARGETS.items()}
    return {"pruned_best_within_seed_std": within, **met}


def report(figures: dict[str, Any], sizes: Sizes) -> None:
    """The summary: each scenario's figures, then every target with its measured value."""
    seeds = " ".join(str(seed) for seed in sizes.seeds)
    print(f"\npruning ({DIRECTION} {OBJECTIVE}; sampler seeds {seeds}; {PRUNER_NAME} vs none):")
    for label in ("pruned", "unpruned"):
        row = figures[label]
        per_seed = " ".join(f"{value:.4f}" for value in row["best_per_seed"])
        print(
            f"  {label:<9} best {row['best']:.4f} (per seed {per_seed})   "
            f"{sum(row['trial_epochs_per_seed']):5d} trial-epochs   {sum(row['wall_s_per_seed']):7.1f} s"
        )
    print(f"  seed std of the unpruned best: {figures['seed_std']:.4f}")
    jobs1, jobs2 = figures["parallel"]["n_jobs_1"], figures["parallel"]["n_jobs_2"]
    print(f"parallel: n_jobs=1 {jobs1['command_wall_s']:.1f} s, n_jobs=2 {jobs2['command_wall_s']:.1f} s")
    run = figures["overhead"]
    print(
        f"overhead: sweeper {run['sweeper_wall_s']:.1f} s, of which trials {run['sweeper_trial_s']:.1f} s; "
        f"whole command {run['command_wall_s']:.1f} s"
    )
    met = {key: "met" if ok else "NOT met" for key, ok in figures["targets"].items()}
    sign = "≤" if DIRECTION == "minimize" else "≥"
    print("\ntargets:")
    print(
        f"  {'pruned best':<20} {figures['pruned']['best']:8.4f}   target {sign} {best_bound(figures):.4f} "
        f"(unpruned best, one seed std worse)   {met['pruned_best_within_seed_std']}"
    )
    for key, limit in TARGETS.items():
        print(f"  {key:<20} {figures[key]:8.4f}   target ≤ {limit:g}   {met[key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every scenario (smoke test)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    ensure_mnist()
    machine = host("optuna", "lightning")
    print(host_line(machine), flush=True)
    started = time.perf_counter()
    figures: dict[str, Any] = {"host": machine, "quick": args.quick, "sizes": asdict(sizes)}
    with tempfile.TemporaryDirectory(prefix="lightyard-sweeps-") as tmp:
        work = Path(tmp)
        figures |= pruning(work / "pruning", sizes)
        figures |= parallel(work / "parallel", sizes)
        figures |= overhead(work / "overhead", sizes)
    figures["targets"] = targets(figures)
    figures["duration_s"] = round(time.perf_counter() - started, 1)
    report(figures, sizes)
    print(f"\n{figures['duration_s']:.0f} s in all; sweeps ran in a temporary folder, removed")
    save_figures(args.json, figures)


if __name__ == "__main__":
    main()
