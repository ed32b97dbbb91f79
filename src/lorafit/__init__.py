"""lorafit: fine-tune a pretrained encoder for text classification with LoRA under a parameter budget."""

__version__ = "0.1.0"

from .budget import plan  # noqa: E402,F401
from .config import load_recipe  # noqa: E402,F401
from .errors import LorafitError  # noqa: E402,F401
