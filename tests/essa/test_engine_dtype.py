"""model.dtype=auto: bfloat16 where the hardware computes in it, float32 on a CPU that only emulates it."""

from __future__ import annotations

import pytest

from essa.config import load_config
from essa.model import dtypes
from essa.model.dtypes import cpu_has_native_bf16, engine_dtype

ZEN2_FLAGS = "fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 sha_ni"  # AVX2 only
ZEN4_FLAGS = ZEN2_FLAGS + " avx512f avx512bw avx512_vnni avx512_bf16"


def cpuinfo(tmp_path, text: str):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (f"processor\t: 0\nflags\t\t: {ZEN2_FLAGS}\n\nprocessor\t: 1\nflags\t\t: {ZEN2_FLAGS}\n", False),
        (f"processor\t: 0\nflags\t\t: {ZEN4_FLAGS}\n", True),
        ("processor\t: 0\nflags\t\t: avx2 avx512f amx_bf16 amx_tile\n", True),  # Sapphire Rapids
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm Neoverse V1
        ("processor\t: 0\nFeatures\t: fp asimd crc32\n", False),  # Arm without BF16
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    assert cpu_has_native_bf16(cpuinfo(tmp_path, text)) is native


def test_an_unreadable_cpuinfo_keeps_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "absent") is True


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_float32_only_on_a_cpu_without_native_bf16(monkeypatch, native):
    monkeypatch.setattr(dtypes, "cpu_has_native_bf16", lambda: native)
    dtype, why = engine_dtype("auto", gpu=False)
    assert dtype == ("bfloat16" if native else "float32")
    assert (why == "") is native and (native or "model.dtype=bfloat16 forces" in why)
    assert engine_dtype("auto", gpu=True) == ("bfloat16", "")
    assert engine_dtype("auto", gpu=False, quantization="int8") == ("bfloat16", "")  # verified in bf16 only
    for explicit in ("bfloat16", "float16", "float32"):
        assert engine_dtype(explicit, gpu=False) == (explicit, "")


def test_the_engines_get_the_resolved_dtype_and_the_run_says_why(monkeypatch, capsys):
    from essa.run.rollout_pool import pool_from_config, worker_spec

    monkeypatch.setattr(dtypes, "cpu_has_native_bf16", lambda: False)
    cfg = load_config("gsm8k")
    assert cfg.model.dtype == "auto" and worker_spec(cfg, None).engine_options["dtype"] == "float32"
    assert (
        worker_spec(load_config("gsm8k", overrides=["model.dtype=bfloat16"]), None).engine_options["dtype"]
        == "bfloat16"
    )

    class FakePool:  # records what it was built from; starts nothing
        def __init__(self, spec, **_):
            self.spec = spec

    monkeypatch.setattr("essa.workers.pool.RolloutPool", FakePool)
    pool = pool_from_config(cfg, None)
    assert pool.spec.engine_options["dtype"] == "float32"
    assert (
        "[essa] engines load the model in float32: model.dtype=auto: this CPU has no native bfloat16"
        in capsys.readouterr().out
    )
