"""MPNet's self-attention through torch's fused kernel, with the same numbers.

transformers has no SDPA form of MPNet's attention (it has one for BERT's): it writes out the scores,
divides them, then adds the relative position bias and the mask, each in a pass of its own. When
nothing is dropped (inference, or an attention dropout of 0), torch's fused scaled_dot_product_attention
does the same with the position bias plus the mask as one additive mask; the longer the texts, the
more it saves (bench/ATTENTION.md). With dropout the stock computation runs: the fused kernel cannot
drop on a CPU, and an eager form with fewer passes measured no faster on training steps.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import _with


def split_heads(x: torch.Tensor, head_size: int) -> torch.Tensor:
    """(batch, tokens, heads * head_size) -> (batch, heads, tokens, head_size)"""
    return x.view(*x.shape[:-1], -1, head_size).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, head_size) -> (batch, tokens, heads * head_size)"""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def drops(attention: nn.Module) -> bool:
    return attention.training and attention.dropout.p > 0


def attend(attention: nn.Module, query, key, value, *biases: torch.Tensor | None) -> torch.Tensor:
    """Softmax(q·kᵀ/√d + biases) · v per head, with `attention`'s dropout on the probabilities."""
    present = [bias for bias in biases if bias is not None]
    bias = sum(present[1:], present[0]) if present else None
    if not drops(attention):
        return nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=bias)
    scores = torch.matmul(query, key.transpose(-1, -2)) / query.size(-1) ** 0.5
    if bias is not None:
        scores = scores + bias
    return torch.matmul(attention.dropout(nn.functional.softmax(scores, dim=-1)), value)


class FusedMPNetSelfAttention:
    """MPNetSelfAttention whose forward calls `attend` when nothing is dropped and no attention
    weights are asked for; otherwise the stock forward runs."""

    def forward(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False, **kwargs):
        if output_attentions or drops(self):
            return super().forward(hidden_states, attention_mask, position_bias, output_attentions, **kwargs)
        query, key, value = (split_heads(f(hidden_states), self.attention_head_size) for f in (self.q, self.k, self.v))
        context = attend(self, query, key, value, position_bias, attention_mask)
        return (self.o(merge_heads(context)),)


def fuse_mpnet_attention(model: nn.Module) -> int:
    """Swap the forward of every MPNet self-attention module in `model` for the fused one (same
    module, weights and names). Returns how many were swapped; 0 for other model types."""
    from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

    swapped = 0
    for module in model.modules():
        if isinstance(module, MPNetSelfAttention) and not isinstance(module, FusedMPNetSelfAttention):
            module.__class__ = _with(FusedMPNetSelfAttention, type(module))
            swapped += 1
    return swapped
