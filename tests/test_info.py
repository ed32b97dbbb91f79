"""`lorafit info` reports this machine as lorafit sees it, and run.json's allocator is the real one."""

import ctypes.util
import json
import os
import subprocess
import sys

from lorafit.device import bf16_supported, cpu_info, inference_path


def lorafit_info(**env):
    environment = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    out = subprocess.run(
        [sys.executable, "-m", "lorafit", "info", "--json"], capture_output=True, text=True, env={**environment, **env}
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_info_reports_the_cpu_and_the_defaults_lorafit_picks_on_it():
    report = lorafit_info()
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    assert report["cpu"]["model"] == model == cpu_info()["model"]
    assert report["training_precision"] == ("bf16" if bf16_supported() else "fp32")
    assert report["inference_path"] == inference_path("auto")
    assert report["versions"]["torch"] and report["versions"]["lorafit"]


AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_an_isa_cap_makes_lorafit_choose_as_on_an_avx2_only_cpu():
    real = cpu_info()["flags"]
    report = lorafit_info(**AVX2_ONLY)
    assert report["torch_kernels"] == "AVX2"
    assert report["cpu"]["flags"] == [flag for flag in real if flag == "avx2"]
    assert report["cpu"].get("isa_cap") == ("AVX2" if report["cpu"]["flags"] != real else None)
    assert report["training_precision"] == report["inference_path"] == "fp32"


def test_the_allocator_is_read_from_the_process_itself():
    assert lorafit_info()["allocator"] == "glibc"
    jemalloc = ctypes.util.find_library("jemalloc")  # .ci/run installs Debian's libjemalloc2
    assert jemalloc, "libjemalloc2 is not installed (apt-get install libjemalloc2)"
    assert lorafit_info(LD_PRELOAD=jemalloc)["allocator"] == "jemalloc"


def test_info_in_text_is_one_line_per_fact():
    out = subprocess.run([sys.executable, "-m", "lorafit", "info"], capture_output=True, text=True, check=True)
    keys = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert keys[0] == "cpu" and "allocator" in keys and keys[-1] == "versions"
