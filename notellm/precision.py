"""Which precision to embed with: one policy for indexing and training's evaluation.

``auto`` means bf16 autocast on CUDA, and on a CPU only where it has native bf16
(AVX512-BF16 or AMX-BF16): there bf16 embeds SmolLM2 notes about 2.7x faster than fp32
(26.5 vs 9.8 notes/s, docs/benchmarks.md "Pipeline"); on an AVX2-only CPU bf16 is
emulated and about 9x *slower*, so ``auto`` stays fp32 there.
"""

from __future__ import annotations

from pathlib import Path

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in /proc/cpuinfo (Linux); False when unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device_type: str) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "auto":
        return device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16())
    return precision == "bf16"
