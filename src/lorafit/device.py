"""What this machine can do fast: bf16 matmuls, and how many threads to use."""

from __future__ import annotations

import os
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """bf16 pays off only with native bf16 units: a CUDA GPU that has them, or AVX-512 BF16 / AMX on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and bf16_supported())


def configure_threads(threads: int | None) -> int:
    """Intra-op threads for torch; tokenizers stay single-threaded so they don't fight the matmuls."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
