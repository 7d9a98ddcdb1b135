"""Train an image classifier: `python train.py [group=option ...] [key=value ...]` (see README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lightyard.config import check_overrides
from lightyard.errors import UserError, exit_on_user_error

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Runs one training job; returns `optimized_metric` so Hydra sweepers (Optuna) can maximise it."""
    from lightyard.training import train  # Lightning and torch: after the command line was checked

    check_nodes_share_a_run_dir(cfg)
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name and name not in metrics and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise UserError(
            f"optimized_metric={name} is not a metric of this run: use one of {', '.join(metrics)}"
        )
    return metrics.get(name) if name else None


def check_nodes_share_a_run_dir(cfg: DictConfig) -> None:
    """Each node of a multi-node run (torchrun, or Lightning's NODE_RANK) composes its own config, and the
    default run dir is stamped with each node's own clock: they would resume and write apart. Checked on
    every node, so that all of them stop, not one while the others wait for it."""
    nodes = cfg.trainer.get("num_nodes", 1)
    hydra_cfg = HydraConfig.get()
    given = any(override.lstrip("+").startswith("hydra.run.dir=") for override in hydra_cfg.overrides.hydra)
    if isinstance(nodes, int) and nodes > 1 and hydra_cfg.mode == RunMode.RUN and not given:
        raise UserError(
            f"trainer.num_nodes={nodes}: each node would stamp its own run dir; give every node the same "
            "hydra.run.dir=DIR"
        )


if __name__ == "__main__":
    exit_on_user_error(check_overrides)(sys.argv[1:], CONF_DIR)
    main()
