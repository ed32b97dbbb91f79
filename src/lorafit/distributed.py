"""Data-parallel training: starting N processes with torchrun."""

from __future__ import annotations

import os
import subprocess
import sys

from .errors import LorafitError


def launch(nproc: int, lorafit_args: list[str]) -> int:
    """Run `lorafit <lorafit_args>` in `nproc` processes on this machine (torchrun, standalone rendezvous).
    Each process gets an equal share of the CPU cores unless OMP_NUM_THREADS says otherwise."""
    if nproc < 1:
        raise LorafitError(f"--nproc must be at least 1, not {nproc}")
    environment = dict(os.environ)
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # torchrun's own parser would take lorafit's --nproc as an abbreviation of its --nproc-per-node
    lorafit_args = [arg for i, arg in enumerate(lorafit_args) if not _is_nproc(lorafit_args, i)]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "lorafit",
        *lorafit_args,
    ]
    return subprocess.run(command, env=environment, check=False).returncode


def _is_nproc(args: list[str], i: int) -> bool:
    """`--nproc N` or `--nproc=N` (lorafit parses no abbreviations, so no other spelling exists)."""
    return args[i] == "--nproc" or args[i].startswith("--nproc=") or (i > 0 and args[i - 1] == "--nproc")
