"""The `lightyard` command: export and quantize models, manage the model registry, list networks.

Training itself is `python train.py` (Hydra). Heavy imports happen inside commands, so `lightyard
models list` stays quick.
"""

from __future__ import annotations

import argparse
import logging

from lightyard import __version__
from lightyard.cli import export, models, quantize, sweeps
from lightyard.errors import exit_on_user_error


def _nets(args: argparse.Namespace) -> None:
    from lightyard.models.nets import classification_models

    for name in classification_models():
        print(name)
    print("\nuse one with: python train.py model/net=torchvision model.net.name=NAME")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightyard", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lightyard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    nets = commands.add_parser("nets", help="list the torchvision classification models model/net accepts")
    nets.set_defaults(func=_nets)
    export.add_command(commands)
    models.add_commands(commands)
    quantize.add_command(commands)
    sweeps.add_commands(commands)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    args.func(args)
