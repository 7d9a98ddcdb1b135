"""Hinton, Vinyals and Dean (2015), Section 3, reproduced on MNIST, and the same for a CNN pair.

MLP pair (the paper's): teacher 784-1200-1200-10 with dropout and ±2-pixel jitter
(experiment=mnist_mlp_teacher), student 784-800-800-10 from scratch without regularisation
(experiment=mnist_mlp_student), the same student distilled at T = 20 (experiment=mnist_mlp_kd).
CNN pair: the experiment=mnist teacher and a student of the same shape with 15× fewer parameters
(experiment=mnist_cnn_student, experiment=mnist_cnn_kd).

Each teacher is trained once and registered (in a temporary BENTOML_HOME unless --home), and every
distilled student loads it from the registry by reference, as a user's run would. Students run for each
seed. Printed: test errors out of 10,000 (mean ± std over seeds) beside the paper's, the distilled
student's per-seed gain over the scratch student (mean ± std), and the fraction of the teacher–scratch gap
it closes. Every run goes through `train(cfg)` with the experiment's own config plus the overrides shown.

    ../shared/data/unpack-mnist data          # once (the bench does it when data/MNIST is missing)
    python bench/mnist_distill.py [--pairs mlp cnn] [--seeds 3] [--home DIR] [--json PATH]
                                  [--teacher-epochs N] [--student-epochs N] [--kd OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from common import DATA, ensure_mnist, host, host_line, save_figures

from lightyard.config import compose_train
from lightyard.errors import UserError
from lightyard.registry import ModelStore, RegisteredModel, load
from lightyard.training import train

TEST_IMAGES = 10_000
QUIET = [
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.prediction_samples=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "export.enabled=false",
    "data.download=false",
    f"data.root={DATA}",
]
PAIRS = {
    "mlp": {
        "teacher": "mnist_mlp_teacher",
        "scratch": "mnist_mlp_student",
        "kd": "mnist_mlp_kd",
        "paper": {"teacher": 67, "scratch": 146, "kd": 74},
    },
    "cnn": {"teacher": "mnist", "scratch": "mnist_cnn_student", "kd": "mnist_cnn_kd", "paper": None},
}


def errors(experiment: str, output_dir: Path, extra: list[str]) -> tuple[int, float]:
    """Test errors of one run out of 10,000, and its seconds."""
    started = time.perf_counter()
    metrics = train(compose_train([f"experiment={experiment}", *QUIET, *extra], output_dir))
    return round(TEST_IMAGES * (1.0 - metrics["test/acc"])), time.perf_counter() - started


def quiet_training() -> None:
    """Many runs in one process: only their results, not Lightning's banners and deprecation notes."""
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def find(reference: str, store: ModelStore) -> RegisteredModel | None:
    try:
        return load(reference, store=store)
    except UserError:
        return None


def study(
    pair: str,
    seeds: list[int],
    work: Path,
    teacher_extra: list[str],
    student_extra: list[str],
    reuse: bool = False,
    kd_extra: Sequence[str] = (),
) -> dict:
    names = PAIRS[pair]
    reference = compose_train([f"experiment={names['kd']}"], work / "compose").distill.teacher
    store = ModelStore()
    if reuse and (registered := find(reference, store)):
        teacher = round(TEST_IMAGES * (1.0 - registered.metadata["metrics"]["test/acc"]))
        print(f"{pair} teacher: {registered.tag} from the registry, {teacher} test errors")
    else:
        register = ["export.enabled=true", "export.formats=[onnx]"]  # versions are registered from exports
        teacher, seconds = errors(names["teacher"], work / f"{pair}-teacher", [*register, *teacher_extra])
        registered = load(reference, store=store)  # the students load it from here
        print(
            f"{pair} teacher ({names['teacher']}): {teacher} test errors in {seconds:.0f} s, {registered.tag}"
        )
    scratch, kd = [], []
    for seed in seeds:
        extra = [f"seed={seed}", "register.enabled=false", *student_extra]
        scratch.append(errors(names["scratch"], work / f"{pair}-scratch{seed}", extra)[0])
        kd_errors, seconds = errors(names["kd"], work / f"{pair}-kd{seed}", [*extra, *kd_extra])
        kd.append(kd_errors)
        print(f"  seed {seed}: scratch {scratch[-1]}, distilled {kd[-1]} errors ({seconds:.0f} s)")
    diffs = [s - k for s, k in zip(scratch, kd, strict=True)]  # errors saved by distillation
    scratch_mean, scratch_std = mean_std(scratch)
    kd_mean, kd_std = mean_std(kd)
    gain, diff_std = mean_std(diffs)
    gap = scratch_mean - teacher
    return {
        "teacher": registered.tag,
        "teacher_errors": teacher,
        "scratch_errors": scratch_mean,
        "scratch_std": scratch_std,
        "kd_errors": kd_mean,
        "kd_std": kd_std,
        "gain": gain,
        "diff_std": diff_std,
        "gap_closed": gain / gap if gap > 0 else None,  # None: the teacher did not beat the student
        "seeds": seeds,
        "per_seed": {"scratch": scratch, "kd": kd},
        "experiments": names | {"teacher_overrides": teacher_extra, "student_overrides": student_extra},
    }


def report(pair: str, figures: dict) -> None:
    paper = PAIRS[pair]["paper"]
    print(f"\n{pair.upper()} pair, {len(figures['seeds'])} seeds (test errors of {TEST_IMAGES:,}):")
    print(f"  {'':<22}{'lightyard':>18}{'paper':>8}")
    for label, key in (
        ("teacher", "teacher"),
        ("student from scratch", "scratch"),
        ("distilled student", "kd"),
    ):
        value = figures[f"{key}_errors"]
        spread = f" ± {figures[f'{key}_std']:.1f}" if key != "teacher" else ""
        print(f"  {label:<22}{f'{value:.1f}{spread}':>18}{paper[key] if paper else '–':>8}")
    paper_closed = (paper["scratch"] - paper["kd"]) / (paper["scratch"] - paper["teacher"]) if paper else None
    closed = (
        "no gap to close" if figures["gap_closed"] is None else f"{figures['gap_closed']:.0%} of it closed"
    )
    print(
        f"  distillation saves {figures['gain']:.1f} ± {figures['diff_std']:.1f} errors per seed; "
        f"teacher–scratch gap {figures['scratch_errors'] - figures['teacher_errors']:.1f}: {closed}"
        + (f" (paper: {paper_closed:.0%})" if paper_closed else "")
        + f"; gain above its std: {'yes' if figures['gain'] > figures['diff_std'] else 'no'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["mlp", "cnn"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--home", type=Path, help="BENTOML_HOME to register the teachers in (default: temporary)"
    )
    parser.add_argument("--teacher-epochs", type=int, help="override the teachers' trainer.max_epochs")
    parser.add_argument("--student-epochs", type=int, help="override the students' trainer.max_epochs")
    parser.add_argument(
        "--kd", nargs="+", default=[], metavar="OVERRIDE",
        help="Hydra overrides for the distilled students only, e.g. distill.alpha=0.5",
    )  # fmt: skip
    parser.add_argument(
        "--reuse-teachers", action="store_true", help="take teachers already registered in --home as they are"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, even in a log file
    quiet_training()
    ensure_mnist()
    machine = host("lightning")
    print(host_line(machine))
    teacher_extra = [f"trainer.max_epochs={args.teacher_epochs}"] if args.teacher_epochs else []
    student_extra = [f"trainer.max_epochs={args.student_epochs}"] if args.student_epochs else []
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BENTOML_HOME"] = str(args.home or Path(tmp) / "bentoml")
        os.environ["BENTOML_DO_NOT_TRACK"] = "true"
        for pair in args.pairs:
            seeds = list(range(args.seeds))
            results[pair] = study(
                pair, seeds, Path(tmp), teacher_extra, student_extra, args.reuse_teachers, args.kd
            )
    for pair, figures in results.items():
        report(pair, figures)
    print(f"\n{time.perf_counter() - started:.0f} s in all; the runs were in a temporary folder, removed")
    save_figures(args.json, {"host": machine, **results})


if __name__ == "__main__":
    main()
