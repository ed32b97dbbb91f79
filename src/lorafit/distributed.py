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
