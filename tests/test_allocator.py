"""The `lorafit` command runs on mimalloc (re-executed once with it preloaded) unless told otherwise."""

import json
import os
import subprocess
import sys

import pytest

from lorafit.allocator import mimalloc_library

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")


def lorafit_info(**env):
    environment = {key: value for key, value in os.environ.items() if key not in ("LORAFIT_ALLOCATOR", "LD_PRELOAD")}
    return subprocess.run(
        [sys.executable, "-m", "lorafit", "info", "--json"],
        capture_output=True,
        text=True,
        env={**environment, **env},
    )


def test_the_command_runs_on_mimalloc_from_its_package():
    library = mimalloc_library()
    assert library is not None and library.is_file()  # a dependency on Linux
    out = lorafit_info()
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["allocator"] == "mimalloc"
    assert report["cpu"]["model"] and report["versions"]["lorafit"]


def test_the_system_allocator_when_asked():
    out = lorafit_info(LORAFIT_ALLOCATOR="system")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["allocator"] == "system"


def test_an_unknown_allocator_is_one_line_and_exit_2():
    out = lorafit_info(LORAFIT_ALLOCATOR="tcmallocc")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "lorafit: error: LORAFIT_ALLOCATOR='tcmallocc' is not one of mimalloc, system"
    ]
