"""How each exported format is written from an eager network (`formats.py` names them, `runtimes.py` runs
them back).

Every format is written from the same CPU float32 network in eval mode, with a dynamic batch axis, and
loaded back in its own runtime (ONNX Runtime, `torch.jit.load`, `torch.export.load`), so the parity gate
compares what a deployment would actually run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lightyard.errors import first_line
from lightyard.export.runtimes import INPUT_NAME, OUTPUT_NAME, quiet

Writer = Callable[[nn.Module, torch.Tensor, Path, int | None], dict]  # returns what is worth recording


def _batch_axis() -> dict[int, torch.export.Dim]:
    return {0: torch.export.Dim("batch", min=1, max=65536)}


def write_onnx(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> dict:
    """Dynamo exporter, one self-contained file, named `input`/`output`, checked by `onnx.checker`."""
    import onnx

    with quiet():
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(_batch_axis(),),
            opset_version=opset,
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch_dim.dim_param:
        raise RuntimeError("the exported graph has a fixed batch size, not a dynamic batch axis")
    opset_used = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    return {"opset": opset_used, "checker": "passed"}


def write_torchscript(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> dict:
    """`torch.jit.script` keeps control flow; nets it cannot compile are traced instead."""
    with quiet():
        try:
            module = torch.jit.script(net)
            details = {"method": "script"}
        except Exception as err:
            module = torch.jit.trace(net, example, check_trace=False)
            details = {"method": "trace", "script_failed": first_line(err)}
        torch.jit.save(module, str(path))
    return details


def write_pt2(net: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> dict:
    with quiet():
        program = torch.export.export(net, (example,), dynamic_shapes=(_batch_axis(),))
        torch.export.save(program, str(path))
    return {}


WRITERS: dict[str, Writer] = {"onnx": write_onnx, "torchscript": write_torchscript, "pt2": write_pt2}
