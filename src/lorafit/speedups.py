"""CPU training speed-ups that keep the model's semantics.

Cheap dropout. On a CPU, torch draws one 32-bit Mersenne-Twister number per element for
dropout, and that serial draw was the largest single cost of a LoRA training step (over a
third of it for MiniLM). Here numpy's PCG64, seeded from torch's generator (so
torch.manual_seed still fixes the masks), gives 64-bit draws faster, each split into four
16-bit numbers, which resolve p to 1/65536. The scaled mask is built from them with integer
ops, as casting a bool mask to a float type took longer than drawing. It stays inverted
dropout; on other devices, and when not training, the stock implementation runs.

Frozen linear weights stored in bf16, so that autocast need not cast them on every call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION_NAME = "lorafit_cpu_dropout"
_LEVELS = 1 << 16


def cpu_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    dropped_levels = round(p * _LEVELS)
    if not training or x.device.type != "cpu" or not 0 < dropped_levels < _LEVELS:
        return nn.functional.dropout(x, p, training)
    # one multiply by a scaled mask is the cheapest form forward and backward (cheaper than where)
    return x * _scaled_keep_mask(x.shape, dropped_levels, x.dtype)


_SAME_WIDTH_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


# Built eagerly under torch.compile: traced with dynamic shapes, the int16 view of numpy's 64-bit
# words came back from the graph as 64-bit elements over a quarter of the storage (a crash).
@torch.compiler.disable
def _scaled_keep_mask(shape: torch.Size, dropped_levels: int, dtype: torch.dtype) -> torch.Tensor:
    """1/(1-p) where an element is kept, 0 where it is dropped: the bits of the scale, or none."""
    threshold = dropped_levels - _LEVELS // 2  # an element is kept where its draw >= threshold
    scale = torch.tensor(_LEVELS / (_LEVELS - dropped_levels), dtype=dtype)
    bits = _SAME_WIDTH_INT[scale.element_size()]
    keep = _int16_draws(shape).clamp_(threshold - 1, threshold).sub_(threshold - 1)  # 0 or 1
    return keep.to(bits).mul_(scale.view(bits).item()).view(dtype)


def _int16_draws(shape: torch.Size) -> torch.Tensor:
    count = math.prod(shape)
    seed = int(torch.randint(1 << 62, (1,)))
    words = np.random.PCG64(seed).random_raw((count + 3) // 4)
    return torch.from_numpy(words.view(np.int16)[:count]).view(shape)


class CpuDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_dropout(x, self.p, self.training)


def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """Attention for a transformers model: SDPA when nothing is dropped (inference), otherwise
    the eager computation with the cheap dropout (SDPA's CPU kernels cannot drop, so SDPA
    would fall back to this computation anyway, with the expensive dropout)."""
    if not module.training or dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # Scaling the queries touches head_size numbers per query, scaling the scores one per key. The mask
    # goes onto the scores in place: the matmul's backward does not need its output, and softmax's
    # backward already gives masked keys no gradient, so a masked_fill's copy and backward are spared.
    scores = torch.matmul(query * (scaling or query.size(-1) ** -0.5), key.transpose(2, 3))
    if attention_mask is not None:
        scores.add_(_additive(attention_mask, scores.dtype))
    weights = cpu_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)


def cast_frozen_linears(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store the frozen weights of linear layers in `dtype`. Under autocast every linear layer
    casts its weight to bf16 on every call; frozen weights can be cast once instead, with the
    same numbers. Embeddings, norms and trainable weights stay as they are. Returns the count."""
    cast = 0
    for module in model.modules():
        # quantized (bitsandbytes) layers are nn.Linear too, with integer weights: left alone
        if isinstance(module, nn.Linear) and not module.weight.requires_grad and module.weight.is_floating_point():
            for parameter in (module.weight, module.bias):
                if parameter is not None and not parameter.requires_grad:
                    parameter.data = parameter.data.to(dtype)
            cast += 1
    return cast


def keep_lora_inputs_in_bf16(model: nn.Module) -> int:
    """Under bf16 autocast, let LoRA take its layer's input as it comes. PEFT copies a bf16 input to
    the adapter's fp32 before the LoRA dropout and lora_A, whose matmul autocast then casts back to
    bf16: the same numbers in that matmul, one activation-sized copy (and its backward) less per
    LoRA module. Returns how many LoRA modules were set."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    kept = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # what peft.helpers.disable_input_dtype_casting sets
            kept += 1
    return kept


def install_cpu_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout in the model (a transformers or PEFT model) for CpuDropout, and
    SDPA attention for `attention`. Returns how many dropout modules were swapped."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, CpuDropout(child.p, child.inplace))
                swapped += 1
    transformer = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(transformer, "config", None), "_attn_implementation", None) == "sdpa":
        AttentionInterface.register(ATTENTION_NAME, attention)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # else the model builds no padding mask
        transformer.set_attn_implementation(ATTENTION_NAME)
    return swapped
