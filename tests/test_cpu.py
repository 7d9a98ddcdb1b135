"""The host's instruction family and the INT8 scheme chosen for it, for every family the chooser knows."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightyard.cpu import (
    CANDIDATES,
    FAMILIES,
    VNNI,
    Int8Scheme,
    host_flags,
    int8_warning,
    isa_family,
    scheme_candidates,
)
from lightyard.errors import UserError

FLAGS = {  # /proc/cpuinfo flag sets of real CPUs, cut to what matters
    "amx": {"avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8"},  # Sapphire Rapids
    "avx512_vnni": {"avx2", "avx512f", "avx512bw", "avx512_vnni"},  # Cascade Lake, Zen 4
    "avx_vnni": {"avx2", "avx_vnni"},  # Alder Lake
    "avx512": {"avx2", "avx512f", "avx512bw"},  # Skylake-SP
    "avx2": {"avx", "avx2", "fma"},  # Zen 2, Haswell
    "arm_dotprod": {"fp", "asimd", "asimddp"},  # Graviton 2, Neoverse N1
    "generic": {"sse4_2"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_from_flags(family: str) -> None:
    assert isa_family(FLAGS[family]) == family


@pytest.mark.parametrize("family", VNNI)
def test_vnni_gets_full_range_u8s8(family: str) -> None:
    assert scheme_candidates(family) == (Int8Scheme("uint8", "int8", per_channel=True, reduce_range=False),)


@pytest.mark.parametrize("family", ["avx2", "avx512"])
def test_without_vnni_reduce_range_comes_first_and_per_tensor_is_measured(family: str) -> None:
    first, *others = scheme_candidates(family)
    assert first == Int8Scheme(per_channel=True, reduce_range=True)  # the guide's advice
    assert Int8Scheme(per_channel=False) in others


def test_arm_and_generic_measure_their_candidates() -> None:
    assert Int8Scheme(activation_type="int8") in scheme_candidates("arm_dotprod")
    assert Int8Scheme(weight_type="uint8") in scheme_candidates("generic")  # U8U8: no saturation anywhere
    assert set(CANDIDATES) == set(FAMILIES)


def test_fixed_fields_override_every_candidate() -> None:
    fixed = scheme_candidates("avx2", per_channel=True, activation_type=None)
    assert fixed == (Int8Scheme(reduce_range=True), Int8Scheme())
    assert scheme_candidates("avx2", per_channel=False, reduce_range=True) == (
        Int8Scheme(per_channel=False, reduce_range=True),
    )


def test_unknown_family_and_type() -> None:
    with pytest.raises(ValueError, match="unknown instruction family 'sse'"):
        scheme_candidates("sse")
    with pytest.raises(UserError, match=r"quantize\.activation_type=fp8 is not a type"):
        Int8Scheme(activation_type="fp8")
    with pytest.raises(UserError, match=r"quantize\.reduce_range=maybe is not true or false"):
        scheme_candidates("avx2", reduce_range="maybe")


def test_scheme_round_trips_through_the_registry_entry() -> None:
    scheme = Int8Scheme(per_channel=False, reduce_range=True)
    entry = scheme.to_dict()
    assert entry["name"] == "U8S8 per-tensor reduce-range"
    assert Int8Scheme.from_dict(entry) == scheme


@pytest.mark.parametrize(
    ("scheme", "gated_on", "served_on", "warns"),
    [
        (Int8Scheme(), "avx512_vnni", "avx2", True),  # full-range U8S8 can saturate without VNNI
        (Int8Scheme(), "avx512_vnni", "avx_vnni", False),
        (Int8Scheme(), "avx2", "avx2", False),  # gated on this very instruction set
        (Int8Scheme(reduce_range=True), "avx512_vnni", "avx2", False),  # 7-bit weights suit every CPU
        (Int8Scheme(activation_type="int8"), "arm_dotprod", "avx512_vnni", True),  # S8S8 is slow on x86
        (Int8Scheme(weight_type="uint8"), "generic", "avx2", False),
    ],
)
def test_server_warning(scheme: Int8Scheme, gated_on: str, served_on: str, warns: bool) -> None:
    warning = int8_warning({"scheme": scheme.to_dict(), "isa": gated_on}, served_on)
    assert (warning is not None) == warns
    if warns:
        assert scheme.name in warning and gated_on in warning and "lightyard quantize" in warning


def test_torch_int8_never_warns() -> None:
    assert int8_warning({"engine": "x86", "isa": "avx512_vnni"}, "avx2") is None


def test_this_host() -> None:
    flags = host_flags()
    if sys.platform == "linux":
        assert flags, "/proc/cpuinfo lists the CPU's flags"
    if "avx2" in flags:
        assert isa_family() != "generic"
    if isa_family() in VNNI:  # then the one scheme suits it
        assert int8_warning({"scheme": scheme_candidates()[0].to_dict(), "isa": isa_family()}) is None


EMULATED_AVX2 = "EPYC-Rome"  # Zen 2: AVX2 and FMA, no VNNI; QEMU 7.2 emulates its CPUID and AVX2
SUM_PROBE = """
import sys, numpy as np
from numpy._core._multiarray_umath import __cpu_features__
from lightyard.export.runtimes import load_onnx
print(int(__cpu_features__["AVX2"]), int(__cpu_features__["AVX512VNNI"]))
print(*(float(load_onnx(path, threads=1)(np.ones((4, 64), np.float32)).mean()) for path in sys.argv[1:]))
"""


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-x86_64 (Debian's qemu-user)")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates x86 CPUs on an x86 host")
def test_full_range_u8s8_saturates_without_vnni_and_reduce_range_does_not(tmp_path: Path) -> None:
    """The premise of the AVX2 candidates, run on ONNX Runtime's own kernels: QEMU shows the same binaries
    an AVX2 CPU's CPUID. Inputs at the top of their range (uint8 255) meet weights at the top of theirs
    (int8 127): each VPMADDUBSW pair sums to 64,770, past int16, so full-range U8S8 clips to 32,767 where
    VNNI's 32-bit sums stay exact; 7-bit weights (63) keep every pair under 32,767. Should this fail,
    ONNX Runtime's AVX2 kernels have changed: revisit CANDIDATES["avx2"]."""
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from lightyard.compress.quantization import quantize_onnx
    from lightyard.export.runtimes import INPUT_NAME, OUTPUT_NAME, load_onnx

    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "weight"], [OUTPUT_NAME])],
        "sum",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(np.ones((64, 16), np.float32), "weight")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fp32.onnx")
    calibration = [torch.tensor([[0.0] * 64, [1.0] * 64])]  # activations over [0, 1]: zero point 0
    paths = []
    for scheme in (Int8Scheme(), Int8Scheme(reduce_range=True)):
        paths.append(tmp_path / f"{scheme.name.replace(' ', '-')}.onnx")
        quantize_onnx(tmp_path / "fp32.onnx", paths[-1], "static", calibration, scheme)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = [os.path.realpath(sys.executable), "-c", SUM_PROBE, *map(str, paths)]
    emulated = subprocess.check_output(["qemu-x86_64", "-cpu", EMULATED_AVX2, *probe], env=env, text=True)
    cpuid, sums = emulated.splitlines()[-2:]
    if cpuid != "1 0":  # QEMU before 7.2 cannot emulate AVX2
        pytest.skip(f"qemu-x86_64 -cpu {EMULATED_AVX2} does not show AVX2 without VNNI (AVX2, VNNI: {cpuid})")
    full_range, reduced = (float(value) for value in sums.split())
    exact = 64.0
    assert full_range == pytest.approx(exact * 32767 / 64770, rel=0.02)  # every pair clipped
    assert reduced == pytest.approx(exact, rel=0.02)
    if isa_family() in VNNI:
        native = [float(load_onnx(path, threads=1)(np.ones((4, 64), np.float32)).mean()) for path in paths]
        assert native == pytest.approx([exact, exact], rel=0.02)
