"""The host's instruction family and the INT8 scheme chosen for it, for every family the chooser knows."""

from __future__ import annotations

import sys

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
