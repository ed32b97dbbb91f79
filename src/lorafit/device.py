"""What this machine can do fast, decided in one place for training and inference: the device,
bf16 or not, the inference path, threads; and the settings a training run records."""

from __future__ import annotations

import dataclasses
import os
import platform
from functools import lru_cache
from importlib import metadata

import torch

from .choices import HALF_PRECISIONS
from .errors import LorafitError

VERSIONED = ("lorafit", "torch", "transformers", "peft", "accelerate", "datasets", "scikit-learn")
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# oneDNN's ONEDNN_MAX_CPU_ISA (which runs bf16 matmuls) -> how many of SPEED_FLAGS it leaves usable.
# Set with MKL_ENABLE_INSTRUCTIONS and ATEN_CPU_CAPABILITY, it makes a newer CPU run as an older one
# (`make bench-avx2`); lorafit then chooses as it would there. Other values (ALL, AMX ones) cap nothing.
ISA_CAPS = {
    "SSE41": 0,
    "AVX": 0,
    "AVX2": 1,
    "AVX2_VNNI": 1,
    "AVX2_VNNI_2": 1,
    "AVX512_CORE": 2,
    "AVX512_CORE_VNNI": 3,
    "AVX512_CORE_BF16": 4,
    "AVX512_CORE_FP16": 4,
}
ISA_CAP_NOTE = (
    "A CPU named with '(capped by ONEDNN_MAX_CPU_ISA=...)' ran with oneDNN, MKL and torch's kernels capped "
    "(`make bench-avx2`): the instructions of an older CPU at this one's clock and memory speed."
)


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The CPU's model name and the flags that decide its speed: these machines differ by up to 6x."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = [flag for flag in SPEED_FLAGS if flag in fields.get("flags", "").split()]
    info = {"model": fields.get("model name", "unknown"), "cores": os.cpu_count(), "flags": flags}
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    usable = [flag for flag in flags if flag in SPEED_FLAGS[: ISA_CAPS.get(cap, len(SPEED_FLAGS))]]
    if usable != flags:
        info.update(flags=usable, isa_cap=cap)
    return info


def cpu_label(cpu: dict | None = None) -> str:
    """One line naming a CPU (this one by default) as every figure should: model, cores, speed flags."""
    cpu = cpu or cpu_info()
    capped = f" (capped by ONEDNN_MAX_CPU_ISA={cpu['isa_cap']})" if cpu.get("isa_cap") else ""
    return f"{cpu['model']}, {cpu['cores']} cores, {'/'.join(cpu['flags']) or 'no AVX2'}{capped}"


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """bf16 pays off only with native bf16 units: a CUDA GPU that has them, or AVX-512 BF16 / AMX on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    flags = cpu_info()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


# The fastest inference path on each kind of CPU that keeps PyTorch fp32's predictions, measured by
# `make bench-paths` (bench/PATHS.md; tests/test_speed_settings.py keeps this table and the measurement
# in step). AVX2: the int8 and onnxruntime paths ran at 0.94-1.02x fp32 (issue 13's measurement).
# AVX-512 without bf16: int8 ran 1.72x fp32 but changed 3% of the predictions. A kind not measured
# yet runs bf16 where it has bf16 units, else fp32.
FASTEST_CPU_PATH = {"amx": "bf16", "avx512-bf16": "bf16", "avx512": "fp32", "avx2": "fp32"}


def cpu_kind() -> str:
    flags = cpu_info()["flags"]
    for kind, flag in (("amx", "amx_bf16"), ("avx512-bf16", "avx512_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return "other"


def inference_path(precision: str) -> str:
    """`auto` is the path measured fastest on this kind of CPU (bench/PATHS.md); others as given."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if bf16_supported() else "fp32"
    return FASTEST_CPU_PATH.get(cpu_kind(), "bf16" if bf16_supported() else "fp32")


def training_device() -> str:
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


@dataclasses.dataclass
class SpeedSettings:
    """What makes a training run fast, decided once (train.speed_settings) and recorded in run.json."""

    device: str
    precision: str  # what the run trains in: a HALF_PRECISIONS name or fp32
    threads: int
    frozen_layers_reused: int = 0  # the first trained layer when the frozen ones below are reused, else 0
    frozen_dropout_draws: int = 0  # stored draws of their dropout, one per epoch; 0: stored without dropout
    dynamic_padding: bool = True
    group_by_length: bool = True
    pad_to_multiple_of: int = 1
    tokenization_cache: bool = True
    cpu_dropout: bool = False
    lora_inputs_in_bf16: bool = False
    fused_attention: bool = False  # asked for by the recipe; after apply_speedups, whether it applied
    last_layer_first_token: bool = False  # asked for by the recipe; after apply_speedups, whether it applied
    processes: int = 1
    allocator: str = "glibc"  # the process's memory allocator (allocator_in_use)
    train_examples_per_second: float | None = None
    epoch_train_examples_per_second: list[float] = dataclasses.field(default_factory=list)
    step_seconds_by_tenth: list[float] = dataclasses.field(default_factory=list)  # training steps, per tenth of them

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "bf16": self.bf16}


HALF_DTYPES = {name: getattr(torch, spec["dtype"]) for name, spec in HALF_PRECISIONS.items()}


def training_precision(precision: str, device: str) -> str:
    """What a run trains in: `auto` is bf16 where the hardware has bf16 units, else fp32."""
    chosen = ("bf16" if bf16_supported() else "fp32") if precision == "auto" else precision
    if device == "cpu" and not HALF_PRECISIONS.get(chosen, {"trains_on_cpu": True})["trains_on_cpu"]:
        raise LorafitError(
            f"training.precision={chosen} trains on a GPU only (on a CPU, accelerate applies no {chosen} "
            "autocast); use training.precision=bf16 (CPUs with AMX or AVX-512 BF16) or fp32"
        )
    return chosen


def configure_threads(threads: int | None) -> int:
    """Intra-op threads for torch; tokenizers stay single-threaded so they don't fight the matmuls."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def package_versions() -> dict:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


KNOWN_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def allocator_in_use() -> str:
    """The memory allocator this process runs on (one preloaded with LD_PRELOAD, or glibc's), from the
    libraries it has mapped: recorded in run.json, as allocators change speed (bench/ALLOCATOR.md)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            mapped = maps.read()
    except OSError:
        return "unknown"
    return next((name for name in KNOWN_ALLOCATORS if f"lib{name}" in mapped), "glibc")


def machine_report() -> dict:
    """What `lorafit info` prints: what decides speed here, and what lorafit will run by default."""
    device = training_device()
    return {
        "cpu": cpu_info(),
        "cpu_kind": cpu_kind(),
        "torch_kernels": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's own kernels use
        "device": device,
        "training_precision": training_precision("auto", device),
        "inference_path": inference_path("auto"),
        "threads": torch.get_num_threads(),
        "allocator": allocator_in_use(),
        "python": platform.python_version(),
        "versions": package_versions(),
    }
