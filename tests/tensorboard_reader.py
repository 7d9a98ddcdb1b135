"""Reading a run's TensorBoard events back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData


def read_events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def hparams_of(accumulator: EventAccumulator) -> tuple[dict[str, object], set[str]]:
    """(hyperparameter values of the session, metric tags the HParams dashboard lists)."""
    content = accumulator.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {}
    for name, value in session.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return values, {info.name.tag for info in experiment.metric_infos}


def graph_count(log_dir: Path) -> int:
    """How many model graphs all event files of a run hold (each process and each resume writes its own)."""
    return sum(
        event.HasField("graph_def")
        for path in log_dir.glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
    )
