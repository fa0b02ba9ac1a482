"""What this machine's CPU can do that changes a precision default.

One rule, read from /proc/cpuinfo (Linux): native bf16 dot products (AVX512-BF16 or AMX).
Used by the fine-tuning recipe (bf16 autocast) and the embedder (bf16 weights); where the
file cannot be read (macOS, Windows) the answer is "no", so those machines keep float32.
"""

from __future__ import annotations

from pathlib import Path


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 dot products natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
