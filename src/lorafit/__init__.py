"""lorafit: fine-tune a pretrained encoder for text classification with LoRA under a parameter budget."""

__version__ = "0.1.0"

import logging as _logging

# PEFT imports bitsandbytes whenever it is installed; on CPUs with AVX-512 BF16 bitsandbytes then
# warns that it could not fetch an optional kernel from the hub. Only that message is dropped.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "gemm_4bit_forward from kernels-community" not in record.getMessage()
)

from .errors import LorafitError  # noqa: E402,F401


def __getattr__(name: str):
    # lorafit.plan loads torch (the model code) and load_recipe pydantic: only when asked, so
    # `import lorafit` and `lorafit --help` start in a fraction of a second
    if name == "plan":
        from .budget import plan

        return plan
    if name == "load_recipe":
        from .config import load_recipe

        return load_recipe
    raise AttributeError(f"module 'lorafit' has no attribute {name!r}")
