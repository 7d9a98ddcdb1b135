"""`lightyard sweeps ...`: list the Optuna studies of hyperparameter sweeps, show one study's trials,
serve one in optuna-dashboard.

They read the study database the sweep writes (sqlite:///LOG_DIR/optuna/STUDY.db by default, or any
SQLAlchemy URL), so they work from another shell while the sweep runs, and after it ends. Reading never
creates a database: a missing file is an error that names the studies that do exist.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightyard.cli.models import _print_json, _table
from lightyard.errors import UserError, first_line
from lightyard.sweeps.study import (
    EPOCHS,
    ERROR,
    PRUNED_EPOCH,
    RUN_DIR,
    default_storage,
    load_study,
    open_storage,
    redact,
    storage_path,
)

if TYPE_CHECKING:
    import optuna

HINT = "run python train.py -m hparams_search=optuna"
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")  # the states a sweep's trials end in, or are in


def add_commands(commands: argparse._SubParsersAction) -> None:
    sweeps = commands.add_parser(
        "sweeps", help="the Optuna studies of hyperparameter sweeps (hparams_search)"
    )
    sub = sweeps.add_subparsers(dest="sweeps_command", required=True)

    listing = sub.add_parser("list", help="every study: trials by state, best value and trial")
    listing.set_defaults(func=list_studies)

    show = sub.add_parser("show", help="every trial of a study: state, value, parameters, epochs, run dir")
    show.add_argument("study", help="the study's name (hydra.sweeper.study_name)")
    show.set_defaults(func=show_study)

    dashboard = sub.add_parser("dashboard", help="serve optuna-dashboard on a study until Ctrl-C")
    dashboard.add_argument("study", help="the study's name (hydra.sweeper.study_name)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    dashboard.set_defaults(func=serve_dashboard)

    for parser in (listing, show, dashboard):
        parser.add_argument(
            "--storage",
            metavar="URL",
            help="the study database, a SQLAlchemy URL (default: sqlite:///LOG_DIR/optuna/STUDY.db; "
            "for list: every LOG_DIR/optuna/*.db)",
        )
        parser.add_argument(
            "--log-dir", type=Path, default=Path("logs"), help="where sweeps log (default: ./logs)"
        )
    for parser in (listing, show):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def list_studies(args: argparse.Namespace) -> None:
    if args.storage:
        _require_file(args.storage)
        urls, where = [args.storage], redact(args.storage)
    else:
        folder = (args.log_dir / "optuna").resolve()
        urls, where = [f"sqlite:///{path}" for path in sorted(folder.glob("*.db"))], str(folder)
    studies = []
    for url in urls:
        try:
            studies.extend(_studies_in(url))
        except UserError as err:  # one unreadable file in the folder does not hide the others
            if args.storage:
                raise
            print(f"warning: {err}", file=sys.stderr, flush=True)
    if args.json:
        _print_json(studies)
        return
    if not studies:
        print(f"no studies in {where}: {HINT}")
        return
    rows = [
        [
            s["name"],
            s["direction"],
            *(str(s["states"][state]) for state in STATES),
            _fmt(s["best_trial"]),
            _fmt(s["best_value"]),
            s["storage"],
        ]
        for s in studies
    ]
    _table(["STUDY", "DIRECTION", *STATES, "BEST TRIAL", "BEST VALUE", "STORAGE"], rows)
    print(f"\n{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} in {where}")


def show_study(args: argparse.Namespace) -> None:
    url = args.storage or default_storage(args.log_dir, args.study)
    study = _load(args.study, url)
    info = {**summary(study, url), "trials": [trial_record(t) for t in study.get_trials(deepcopy=False)]}
    if args.json:
        _print_json(info)
        return
    words = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    counts = ", ".join(f"{info['states'][state]} {words[state]}" for state in STATES)
    print(f"study {info['name']} ({info['direction']}) in {info['storage']}")
    print(f"{info['n_trials']} trial(s): {counts}\n")
    if not info["trials"]:
        print(f"no trials yet: {HINT}")
        return
    names = list(dict.fromkeys(name for trial in info["trials"] for name in trial["params"]))
    rows = [
        [
            str(t["number"]),
            t["state"],
            _fmt(t["value"]),
            _fmt(t["epochs"]),
            *(_fmt(t["params"].get(name)) for name in names),
            t["run_dir"] or "-",
        ]
        for t in info["trials"]
    ]
    _table(["TRIAL", "STATE", "VALUE", "EPOCHS", *names, "RUN DIR"], rows)
    for trial in info["trials"]:
        if trial["state"] == "FAIL":
            print(f"trial {trial['number']} failed: {trial['error'] or 'no error recorded'}")
        if trial["pruned_epoch"] is not None:
            print(f"trial {trial['number']} pruned after epoch {trial['pruned_epoch']}")
    print()
    if info["best_trial"] is None:
        print("best: none yet (no complete trial)")
        return
    best = next(t for t in info["trials"] if t["number"] == info["best_trial"])
    params = " ".join(f"{key}={_fmt(value)}" for key, value in best["params"].items())
    print(f"best: trial {best['number']}, value {_fmt(best['value'])} ({info['direction']}): {params}")
    if best["run_dir"]:
        print(f"      run dir {best['run_dir']}")


def serve_dashboard(args: argparse.Namespace) -> None:
    import optuna_dashboard

    url = args.storage or default_storage(args.log_dir, args.study)
    _load(args.study, url)
    storage = open_storage(url, heartbeat_s=None, grace_s=None)  # a viewer never marks trials failed
    study_id = storage.get_study_id_from_name(args.study)
    host = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    host = f"[{host}]" if ":" in host else host
    print(
        f"optuna-dashboard on study {args.study} ({redact(url)}): "
        f"open http://{host}:{args.port}/dashboard/studies/{study_id} (Ctrl-C stops it)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` and service managers end it as quietly as Ctrl-C
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    except KeyboardInterrupt:  # Ctrl-C is how it ends
        pass
    except OSError as err:  # the address is taken or cannot be bound
        raise UserError(
            f"cannot serve on {args.host}:{args.port}: {first_line(err)} (pick another --port)"
        ) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def summary(study: optuna.Study, url: str) -> dict[str, Any]:
    """The fields `list --json` promises for each study (`show --json` adds its trials)."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(trial.state.name for trial in trials)
    best = _best(study)
    return {
        "name": study.study_name,
        "storage": redact(url),
        "direction": ",".join(direction.name.lower() for direction in study.directions),
        "n_trials": len(trials),
        "states": {state: counts[state] for state in STATES},
        "best_trial": None if best is None else best.number,
        "best_value": None if best is None else best.value,
    }


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as `show --json` gives it: what the sweep recorded, None where it recorded nothing."""
    values = trial.values
    attrs = trial.user_attrs
    duration = trial.duration
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": values[0] if values and len(values) == 1 else values,
        "params": trial.params,
        "epochs": attrs.get(EPOCHS),
        "pruned_epoch": attrs.get(PRUNED_EPOCH),
        "run_dir": attrs.get(RUN_DIR),
        "error": attrs.get(ERROR),
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "duration_s": None if duration is None else round(duration.total_seconds(), 3),
    }


def _studies_in(url: str) -> list[dict[str, Any]]:
    import optuna

    storage = open_storage(url, heartbeat_s=None, grace_s=None)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    return [summary(optuna.load_study(study_name=name, storage=storage), url) for name in names]


def _load(name: str, url: str) -> optuna.Study:
    """`load_study`, after checking a SQLite file exists: opening a missing one would create it."""
    _require_file(url)
    return load_study(name, url)


def _require_file(url: str) -> None:
    path = storage_path(url)
    if path is None or path.is_file():
        return
    folder = path.parent.resolve()
    found = sorted(p.name for p in folder.glob("*.db"))
    there = f"{folder} holds {', '.join(found)}" if found else f"{folder} holds no study database: {HINT}"
    raise UserError(f"no study database at {path.resolve()}: {there} (or pass --storage URL)")


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial; None before one completes, and for a multi-objective study."""
    if len(study.directions) != 1:
        return None
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ",".join(_fmt(item) for item in value)
    return str(value)
