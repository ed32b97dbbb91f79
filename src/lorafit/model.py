"""The base encoder, its dropout and the LoRA adapter around it and its head (heads.py)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import torch

from .config import LoraSettings, ModelConfig
from .errors import LorafitError
from .heads import apply_head
from .packaged import packaged_model_folder

# encoder blocks live in a ModuleList: roberta.encoder.layer.3, distilbert.transformer.layer.3, h.3 ...
_LAYER_LISTS = {"layer", "layers", "h", "block", "blocks"}
_DROPOUT_KEYS = {
    "hidden_dropout": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
}


# Architecture-free target names -> each family's module path inside an encoder layer.
_BERT_LIKE = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
PORTABLE_TARGETS = {
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "camembert", "electra"], _BERT_LIKE),
    "mpnet": {
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attention_output": "attention.attn.o",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    "distilbert": {
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_output": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
    "deberta-v2": {
        **_BERT_LIKE,
        "query": "attention.self.query_proj",
        "key": "attention.self.key_proj",
        "value": "attention.self.value_proj",
    },
}
PORTABLE_NAMES = tuple(_BERT_LIKE)


def portable_to_module(name: str, model_type: str | None) -> str:
    """The family's module path for a portable target name; any other name unchanged."""
    family = PORTABLE_TARGETS.get(model_type or "")
    if name in PORTABLE_NAMES and family is None and name not in ("query", "key", "value"):
        raise LorafitError(
            f"lora target '{name}' is a portable name, mapped only for model types "
            f"{', '.join(sorted(PORTABLE_TARGETS))} (this model is '{model_type}'): "
            "name its modules explicitly"
        )
    return family.get(name, name) if family else name


def resolve_model_path(name: str) -> str:
    """A local folder as is; a model that an installed package ships; else a hub id."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    return packaged_model_folder(name) or name


def portable_model_name(name: str, run_dir: Path) -> tuple[str, bool]:
    """How a run records its base model: (name, relative_to_run). A hub id or package name as
    given; a local folder as a path relative to the run, so the two can move together."""
    if Path(name).is_dir():
        return os.path.relpath(Path(name).resolve(), Path(run_dir).resolve()), True
    return name, False


def run_model_name(run_dir: Path, info: dict) -> str:
    """The base model of a saved run, as this machine can load it."""
    name = info["recipe"]["model"]["name"]
    if not info.get("base_model_relative_to_run"):
        return name  # a hub id or package name, or a run from before relocatable runs
    folder = (Path(run_dir) / name).resolve()
    if not folder.is_dir():
        raise LorafitError(
            f"{run_dir}: its base model is the local folder {name} (relative to the run), "
            f"not found at {folder}; copy the model folder there"
        )
    return str(folder)


def model_identity(model_path: str) -> str:
    """The config and the weight files' sizes and times: a different model gives another key."""
    folder = Path(model_path)
    if not folder.is_dir():
        return model_path
    parts = [(folder / "config.json").read_text(encoding="utf-8") if (folder / "config.json").is_file() else ""]
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = weights.stat()
        parts.append(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return "\n".join(parts)


def load_base_config(model_cfg: ModelConfig, label_names: list[str]):
    from transformers import AutoConfig

    path = resolve_model_path(model_cfg.name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise LorafitError(f"model '{model_cfg.name}' could not be loaded: {str(e).splitlines()[0]}") from None
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    for key, attributes in _DROPOUT_KEYS.items():
        value = getattr(model_cfg, key)
        if value is not None:
            for attribute in attributes:
                if hasattr(config, attribute):
                    setattr(config, attribute, value)
    return config


def load_tokenizer(model_cfg: ModelConfig):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            resolve_model_path(model_cfg.name), trust_remote_code=model_cfg.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise LorafitError(f"tokenizer of '{model_cfg.name}' could not be loaded: {str(e).splitlines()[0]}") from None


def quantization_config(model_cfg: ModelConfig):
    """bitsandbytes settings for `model.quantization` (QLoRA's NF4 with double quantization for
    4bit). The head stays in full precision: it is trained, and new, so not in the checkpoint."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LorafitError(
            f"model.quantization={model_cfg.quantization} needs bitsandbytes: "
            "pip install 'lorafit[qlora]' (or drop model.quantization)"
        ) from None
    from transformers import BitsAndBytesConfig

    from .device import bf16_supported

    head = ["classifier", "score", "pre_classifier"]
    if model_cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=head)
    dtype = model_cfg.quantization_compute_dtype
    if dtype == "auto":
        dtype = "bfloat16" if bf16_supported() else "float32"
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, dtype),
        llm_int8_skip_modules=head,
    )


def build_base_model(model_cfg: ModelConfig, label_names: list[str], weights: bool = True, quantize: bool = False):
    """The encoder with a fresh classification head; on the meta device (no memory) when weights=False;
    with its frozen linear layers quantized by bitsandbytes when `quantize` and the recipe asks for it."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    config = load_base_config(model_cfg, label_names)
    if not weights:
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=model_cfg.trust_remote_code)
    quantized = {}
    if quantize and model_cfg.quantization:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        quantized = {"quantization_config": quantization_config(model_cfg), "device_map": {"": device}}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" warning is expected: we train it
    hf_logging.disable_progress_bar()  # a bar per model load is noise around lorafit's own output
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(model_cfg.name),
            config=config,
            trust_remote_code=model_cfg.trust_remote_code,
            **quantized,
        )
    except (OSError, ValueError) as e:
        raise LorafitError(f"weights of '{model_cfg.name}' could not be loaded: {str(e).splitlines()[0]}") from None
    except Exception as e:  # bitsandbytes without kernels for this device fails in many ways
        if not quantized:
            raise
        version = metadata.version("bitsandbytes")
        raise LorafitError(
            f"model.quantization={model_cfg.quantization}: bitsandbytes {version} "
            f"could not quantize on {quantized['device_map']['']} ({str(e).splitlines()[0][:200]}); "
            "install a bitsandbytes build for this device or drop model.quantization"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def layer_of(module_name: str) -> tuple[int, str] | None:
    """(layer index, path inside the layer) for a module inside an encoder block, else None."""
    parts = module_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].isdigit() and parts[i - 1] in _LAYER_LISTS:
            return int(parts[i]), ".".join(parts[i + 1 :])
    return None


def resolve_targets(model: torch.nn.Module, targets: list) -> list[str]:
    """Full paths of the linear modules that the recipe's targets name, in model order.

    Portable names (query, key, value, attention_output, ffn_in, ffn_out) are first mapped to
    the model family's own module names (PORTABLE_TARGETS).

    Inside a layer a name matches the module whose path within the layer equals it, or failing
    that, ends with it: `output.dense` is the feed-forward output, `query` the attention query.
    """
    linear = [
        n
        for n, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d)) or type(m).__name__ == "Conv1D"
    ]
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    chosen: set[str] = set()
    for target in targets:
        if isinstance(target, str) and target in linear:
            chosen.add(target)
            continue
        names, layers = ([target], None) if isinstance(target, str) else (target["modules"], target.get("layers"))
        for name in (portable_to_module(n, model_type) for n in names):
            found = _match_in_layers(linear, name, layers)
            if not found:
                candidates = sorted({(layer_of(n) or (0, n))[1] for n in linear})
                where = f" in layers {layers}" if layers is not None else ""
                raise LorafitError(
                    f"lora target '{name}' matches no linear module{where} (candidates: {', '.join(candidates)})"
                )
            chosen.update(found)
    return [n for n in linear if n in chosen]


def _match_in_layers(linear: list[str], name: str, layers: list[int] | None) -> list[str]:
    by_layer: dict[int | None, list[tuple[str, str]]] = {}
    for full in linear:
        located = layer_of(full)
        index, inner = located if located else (None, full)
        if layers is not None and index not in layers:
            continue
        by_layer.setdefault(index, []).append((full, inner))
    found = []
    for members in by_layer.values():
        exact = [full for full, inner in members if inner == name]
        found += exact or [full for full, inner in members if inner.endswith("." + name)]
    return found


def lora_config(
    settings: LoraSettings, target_modules: list[str], modules_to_save: list[str] | None = None, total_steps: int = 1000
):
    """PEFT's config. With `modules_to_save` the head is named explicitly (no task type, which
    would make the whole head trainable); AdaLoRA needs the number of training steps."""
    from peft import AdaLoraConfig, LoraConfig, TaskType

    common = dict(
        task_type=None if modules_to_save else TaskType.SEQ_CLS,
        modules_to_save=modules_to_save,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        bias=settings.bias,
        target_modules=target_modules,
        use_rslora=settings.use_rslora,
        init_lora_weights=True if settings.init == "default" else settings.init,
    )
    if settings.variant == "adalora":
        # prune ranks between 10% and 70% of training, then let the final ranks settle
        return AdaLoraConfig(
            **common,
            init_r=settings.r,
            target_r=settings.adalora_target_r,
            total_step=total_steps,
            tinit=total_steps // 10,
            tfinal=3 * total_steps // 10,
            deltaT=max(1, total_steps // 50),
        )
    return LoraConfig(
        **common,
        r=settings.r,
        rank_pattern=dict(settings.rank_pattern),
        alpha_pattern=dict(settings.alpha_pattern),
        use_dora=settings.use_dora,
    )


def build_lora_model(
    model_cfg: ModelConfig, lora: LoraSettings, label_names: list[str], weights: bool = True, total_steps: int = 1000
):
    """The PEFT model to train: frozen encoder + LoRA on the targets + the trainable head."""
    from peft import get_peft_model

    base = build_base_model(model_cfg, label_names, weights=weights, quantize=True)
    head = apply_head(base, model_cfg.head, model_cfg.classifier_dropout)
    if weights and model_cfg.quantization:
        from peft import prepare_model_for_kbit_training

        # norms and head in fp32, gradient checkpointing (QLoRA is about memory), gradients into the inputs
        base = prepare_model_for_kbit_training(base, gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = resolve_targets(base, lora.targets) + head["targets"]
    return get_peft_model(base, lora_config(lora, targets, head["modules_to_save"], total_steps))
