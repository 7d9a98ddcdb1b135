"""What distillation buys on digits: teacher vs scratch student vs distilled student, over seeds and a
small grid of temperature T and weight α.

For each seed it trains the teacher (experiment=digits_teacher), the student from scratch
(experiment=digits_student) and, for every (T, α) of the grid, the same student distilled from that
seed's teacher (experiment=digits_kd with the teacher's best.ckpt). Everything runs in this process
through `train(cfg)`, without export or registration. It prints, per setting, the distilled student's
test accuracy (mean ± std over seeds), the mean and std of its per-seed difference to the scratch
student, and the fraction of the teacher–scratch gap it closes. The best setting is chosen by the
distilled students' validation accuracy (`val/acc_best`), not by the test accuracy it is reported with.

    python bench/distill_study.py [--seeds 5] [--first-seed 0] [--temperatures 2 4 8] [--alphas 0.1 0.5]
                                  [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from common import host, host_line, save_figures

from lightyard.config import compose_train
from lightyard.data import DigitsDataModule
from lightyard.models import build_net
from lightyard.training import train

QUIET = [
    "logger=none",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.prediction_samples=null",
    "callbacks.lr_monitor=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "export.enabled=false",
    "register.enabled=false",
]


def run(overrides: list[str], output_dir: Path) -> dict[str, float]:
    """A run's validation accuracy (what a setting is chosen by) and test accuracy (what is reported)."""
    metrics = train(compose_train([*QUIET, *overrides], output_dir))
    return {"val": metrics["val/acc_best"], "test": metrics["test/acc"]}


def parameters(experiment: str, output_dir: Path) -> int:
    cfg = compose_train([f"experiment={experiment}"], output_dir)
    net = build_net(cfg.model.net, DigitsDataModule().spec)
    return sum(p.numel() for p in net.parameters())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed … first-seed+seeds−1")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    machine = host("lightning")
    print(host_line(machine), flush=True)

    grid = list(itertools.product(args.temperatures, args.alphas))
    teacher, scratch = [], []
    kd: dict[tuple[float, float], list[float]] = {setting: [] for setting in grid}
    kd_val: dict[tuple[float, float], list[float]] = {setting: [] for setting in grid}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sizes = {name: parameters(f"digits_{name}", root / "sizes") for name in ("teacher", "student")}
        for index, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
            teacher_dir = root / f"teacher{seed}"
            teacher.append(run(["experiment=digits_teacher", f"seed={seed}"], teacher_dir)["test"])
            scratch.append(
                run(["experiment=digits_student", f"seed={seed}"], root / f"scratch{seed}")["test"]
            )
            best = teacher_dir / "checkpoints" / "best.ckpt"
            for temperature, alpha in grid:
                overrides = [
                    "experiment=digits_kd",
                    f"seed={seed}",
                    f"distill.teacher={best}",
                    f"distill.temperature={temperature}",
                    f"distill.alpha={alpha}",
                ]
                result = run(overrides, root / f"kd{seed}_{temperature}_{alpha}")
                kd[(temperature, alpha)].append(result["test"])
                kd_val[(temperature, alpha)].append(result["val"])
            distilled = ", ".join(f"{kd[setting][-1]:.4f}" for setting in grid)
            print(
                f"seed {seed} ({index + 1}/{args.seeds}): teacher {teacher[-1]:.4f}, "
                f"scratch {scratch[-1]:.4f}, "
                f"distilled {distilled}  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )

    teacher_mean, teacher_std = mean_std(teacher)
    scratch_mean, scratch_std = mean_std(scratch)
    gap = teacher_mean - scratch_mean
    rows = []
    for setting, accs in kd.items():
        diffs = [k - s for k, s in zip(accs, scratch, strict=True)]
        kd_mean, kd_std = mean_std(accs)
        diff_mean, diff_std = mean_std(diffs)
        rows.append(
            {
                "temperature": setting[0],
                "alpha": setting[1],
                "kd_val_acc": statistics.mean(kd_val[setting]),
                "kd_acc": kd_mean,
                "kd_std": kd_std,
                "diff_mean": diff_mean,
                "diff_std": diff_std,
                "gap_closed": (kd_mean - scratch_mean) / gap if gap > 0 else float("nan"),
                "beats_scratch": diff_mean > diff_std,
            }
        )
    best = max(rows, key=lambda row: row["kd_val_acc"])  # chosen on validation, reported on test

    print(f"\n{args.seeds} seeds; test set of {len(DigitsDataModule().load_splits().test)} digits")
    print(f"{'model':<34}{'params':>9}  {'test acc (mean ± std)':>22}")
    for label, size, (mean, std) in (
        ("teacher (digits_teacher)", sizes["teacher"], (teacher_mean, teacher_std)),
        ("scratch student (digits_student)", sizes["student"], (scratch_mean, scratch_std)),
    ):
        print(f"{label:<34}{size:>9,}  {mean:>13.4f} ± {std:.4f}")
    print(
        f"\n{'T':>5} {'alpha':>6}  {'val':>6}  {'distilled':>17}  {'kd − scratch':>17}  {'gap closed':>10}  "
        "beats scratch"
    )
    for row in rows:
        print(
            f"{row['temperature']:>5g} {row['alpha']:>6g}  {row['kd_val_acc']:.4f}  "
            f"{row['kd_acc']:.4f} ± {row['kd_std']:.4f}  "
            f"{row['diff_mean']:+.4f} ± {row['diff_std']:.4f}  {row['gap_closed']:>10.0%}  "
            f"{'yes' if row['beats_scratch'] else 'no'}"
        )
    print(
        f"\nbest on validation: T={best['temperature']:g}, alpha={best['alpha']:g}: "
        f"test {best['kd_acc']:.4f}, "
        f"{best['diff_mean']:+.4f} ± {best['diff_std']:.4f} over scratch, "
        f"{best['gap_closed']:.0%} of the gap closed ({time.perf_counter() - started:.0f} s in all)"
    )
    print("runs were written to a temporary folder and removed")
    figures = {
        "host": machine,
        "chosen_by": "the distilled students' mean val/acc_best",
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "teacher_params": sizes["teacher"],
        "student_params": sizes["student"],
        "teacher_acc": teacher_mean,
        "teacher_std": teacher_std,
        "scratch_acc": scratch_mean,
        "scratch_std": scratch_std,
        "kd_acc": best["kd_acc"],
        "kd_std": best["kd_std"],
        "diff_mean": best["diff_mean"],
        "diff_std": best["diff_std"],
        "gap_closed": best["gap_closed"],
        "best": {"temperature": best["temperature"], "alpha": best["alpha"]},
        "grid": rows,
        "per_seed": {
            "teacher": teacher,
            "scratch": scratch,
            "kd": {f"T={t:g},alpha={a:g}": v for (t, a), v in kd.items()},
        },
    }
    save_figures(args.json, figures)


if __name__ == "__main__":
    main()
