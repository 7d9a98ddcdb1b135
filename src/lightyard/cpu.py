"""What the host CPU offers INT8 inference, and the ONNX Runtime quantization schemes that suit it.

ONNX Runtime's integer kernels differ by instruction set, and so does the scheme that is both fast and
accurate (its quantization guide, "Data type selection" and "reduce-range"):
- VNNI (AVX-512 VNNI, AVX-VNNI, AMX): uint8 activations × int8 weights (U8S8) run on the dot-product
  instructions without saturation; per-channel weights at the full 8 bits.
- AVX2 or AVX-512 without VNNI: U8S8 runs on VPMADDUBSW, whose 16-bit sums can saturate; the guide
  advises 7-bit weights (`reduce_range`), and per-channel weights "generally" need it. Whether per-channel
  with reduce_range beats per-tensor at full range depends on the model: both are measured.
- ARM with the dot-product extension: signed and unsigned kernels both exist; measured.
- Anything else: measured between U8S8 with reduce_range and U8U8 (no saturation at all).
Torch-free: the server reads it to warn when an INT8 model meets a CPU it was not chosen for.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path

from lightyard.errors import UserError

VNNI = ("amx", "avx512_vnni", "avx_vnni")  # families whose U8S8 kernels cannot saturate
FAMILIES = (*VNNI, "avx512", "avx2", "arm_dotprod", "generic")  # best first
_FLAGS = {  # family ← any of these /proc/cpuinfo flags
    "amx": ("amx_int8",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512": ("avx512bw",),
    "avx2": ("avx2",),
    "arm_dotprod": ("asimddp",),
}


TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class Int8Scheme:
    """ONNX Runtime quantization settings: activation and weight types, per-channel weights, 7-bit
    weights (`reduce_range`)."""

    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False

    def __post_init__(self) -> None:
        for field_name in ("activation_type", "weight_type"):
            if getattr(self, field_name) not in TYPES:
                raise UserError(
                    f"quantize.{field_name}={getattr(self, field_name)} is not a type: use uint8 or int8"
                )
        for field_name in ("per_channel", "reduce_range"):
            if not isinstance(getattr(self, field_name), bool):
                raise UserError(
                    f"quantize.{field_name}={getattr(self, field_name)} is not true or false: "
                    "set true, false "
                    "or null (chosen for this CPU)"
                )

    @property
    def name(self) -> str:
        kinds = (self.activation_type, self.weight_type)
        types = "".join("U8" if kind == "uint8" else "S8" for kind in kinds)
        layout = " per-channel" if self.per_channel else " per-tensor"
        return types + layout + (" reduce-range" if self.reduce_range else "")

    @property
    def needs(self) -> tuple[str, ...]:
        """The instruction families this scheme is accurate and fast on (empty: any CPU). Full-range
        U8S8 can saturate without VNNI; signed activations run fast only on ARM's dot-product kernels
        (on x86 they ran slower than FP32: docs/results.md, Compression)."""
        if self.activation_type == "int8":
            return ("arm_dotprod",)
        if self.weight_type == "int8" and not self.reduce_range:
            return (*VNNI, "arm_dotprod")
        return ()

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name}

    @classmethod
    def from_dict(cls, values: dict) -> Int8Scheme:
        fields = ("activation_type", "weight_type", "per_channel", "reduce_range")
        return cls(**{key: values[key] for key in fields})


_U8S8 = Int8Scheme()
_U8S8_REDUCED = Int8Scheme(reduce_range=True)
_U8S8_PER_TENSOR = Int8Scheme(per_channel=False)
_S8S8 = Int8Scheme(activation_type="int8")
_U8U8 = Int8Scheme(weight_type="uint8")

CANDIDATES: dict[str, tuple[Int8Scheme, ...]] = {
    "amx": (_U8S8,),
    "avx512_vnni": (_U8S8,),
    "avx_vnni": (_U8S8,),
    "avx512": (_U8S8_REDUCED, _U8S8_PER_TENSOR),
    "avx2": (_U8S8_REDUCED, _U8S8_PER_TENSOR),
    "arm_dotprod": (_S8S8, _U8S8),
    "generic": (_U8S8_REDUCED, _U8U8),
}


def _cpuinfo(*keys: str) -> str | None:
    """The first value of any of `keys` in /proc/cpuinfo (Linux), or None."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_model() -> str:
    return _cpuinfo("model name", "Model") or platform.processor() or platform.machine()


@cache
def host_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (`flags` on x86, `Features` on ARM); empty elsewhere."""
    flags = _cpuinfo("flags", "Features")
    if flags is not None:
        return frozenset(flags.split())
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return frozenset({"asimddp"})  # every Apple silicon core has the dot-product instructions
    return frozenset()


def isa_family(flags: frozenset[str] | set[str] | None = None) -> str:
    """The best integer instruction family among `flags` (default: this host's)."""
    flags = host_flags() if flags is None else flags
    for family, names in _FLAGS.items():
        if any(name in flags for name in names):
            return family
    return "generic"


def scheme_candidates(family: str | None = None, **fixed: object) -> tuple[Int8Scheme, ...]:
    """The schemes worth trying on `family` (default: this host's), the guide's advice first. Fields
    given in `fixed` (a user's explicit choice; None: not fixed) replace the candidates' own."""
    family = family or isa_family()
    if family not in CANDIDATES:
        raise ValueError(f"unknown instruction family '{family}': one of {', '.join(FAMILIES)}")
    fixed = {key: value for key, value in fixed.items() if value is not None}
    return tuple(dict.fromkeys(replace(scheme, **fixed) for scheme in CANDIDATES[family]))


def int8_warning(artifact: dict, family: str | None = None) -> str | None:
    """Why an INT8 artifact (its registry entry: the ONNX Runtime scheme and the instruction family it was
    chosen and gated on) may lose accuracy or speed on `family` (default: this host's); None if it suits."""
    if "scheme" not in artifact:  # torch-native INT8: 7-bit activations, safe on every x86
        return None
    scheme, gated_on = Int8Scheme.from_dict(artifact["scheme"]), artifact.get("isa")
    family = family or isa_family()
    if not scheme.needs or family in scheme.needs or family == gated_on:
        return None
    return (
        f"this INT8 model ({scheme.name}) was chosen and gated on a CPU with {gated_on or 'unknown'} "
        f"instructions; this one has {family}, where it may lose accuracy or speed: quantize it again here "
        "(lightyard quantize NAME@STAGE) and serve that version"
    )
