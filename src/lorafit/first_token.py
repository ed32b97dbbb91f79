"""The last encoder layer computed for the first token only, when the head reads nothing else.

A first-token head (RoBERTa's, BERT's and MPNet's own, lorafit's `linear` and `lora-dense`) reads
the final hidden state of token 0 alone. In the last layer, every other token's output is
computed and thrown away: its query, its attention row, the attention output projection and the
feed-forward block, about 5/6 of that layer forward and backward. Here the last layer computes
keys and values for every token (token 0 attends to them) and the rest for token 0: the same
numbers for what the head reads (tests/test_first_token.py). The encoder's last hidden state then
holds token 0 alone, which a first-token head does not notice.

Two layer layouts are known: BERT's (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM) and MPNet's. Any other
layout, and any call the layer is not built for (cross-attention, a cache), runs the stock forward.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from .frozen import encoder_layers
from .heads import _with
from .mpnet_attention import attend, merge_heads, split_heads

# the stock heads that read the first token, by model type
FIRST_TOKEN_STOCK_HEADS = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet"})
FIRST_TOKEN_HEADS = frozenset({"linear", "lora-dense"})


def reads_first_token_only(model_type: str, head: str) -> bool:
    return head in FIRST_TOKEN_HEADS or (head == "default" and model_type in FIRST_TOKEN_STOCK_HEADS)


def first_row(mask: torch.Tensor | None) -> torch.Tensor | None:
    """An attention mask or bias of shape (..., queries, keys) for the first query alone."""
    return mask[..., :1, :] if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1 else mask


class BertFirstTokenLayer:
    """A BERT-layout layer whose forward computes token 0's output (keys and values from all tokens)."""

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        # the encoder passes encoder_hidden_states positionally (None without cross-attention)
        if any(a is not None for a in args) or any(
            kwargs.get(k) is not None for k in ("encoder_hidden_states", "cache")
        ):
            return super().forward(hidden_states, attention_mask, *args, **kwargs)
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        attention, first = self.attention.self, hidden_states[:, :1]
        size = attention.attention_head_size
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            attention.config._attn_implementation, sys.modules[type(attention).__module__].eager_attention_forward
        )
        context, _ = interface(
            attention,
            split_heads(attention.query(first), size),
            split_heads(attention.key(hidden_states), size),
            split_heads(attention.value(hidden_states), size),
            first_row(attention_mask),
            dropout=attention.dropout.p if attention.training else 0.0,
            scaling=attention.scaling,
        )
        attention_output = self.attention.output(context.reshape(*first.shape[:-1], -1), first)
        return self.feed_forward_chunk(attention_output)


class MPNetFirstTokenLayer:
    """An MPNet layer whose forward computes token 0's output; its relative position bias is sliced
    like the mask."""

    def forward(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False, **kwargs):
        if output_attentions:
            return super().forward(hidden_states, attention_mask, position_bias, output_attentions, **kwargs)
        attention, first = self.attention.attn, hidden_states[:, :1]
        size = attention.attention_head_size
        query = split_heads(attention.q(first), size)
        key, value = split_heads(attention.k(hidden_states), size), split_heads(attention.v(hidden_states), size)
        context = merge_heads(attend(attention, query, key, value, first_row(position_bias), first_row(attention_mask)))
        attention_output = self.attention.LayerNorm(self.attention.dropout(attention.o(context)) + first)
        return (self.output(self.intermediate(attention_output), attention_output),)


def _layout(layer: nn.Module) -> type | None:
    attention = getattr(layer, "attention", None)
    if all(hasattr(layer, name) for name in ("intermediate", "output", "feed_forward_chunk")) and all(
        hasattr(getattr(attention, "self", None), name) for name in ("query", "key", "value", "scaling")
    ):
        return BertFirstTokenLayer
    if all(hasattr(getattr(attention, "attn", None), name) for name in ("q", "k", "v", "o")):
        return MPNetFirstTokenLayer
    return None


def why_every_token(model: nn.Module, head: str) -> str | None:
    """Why the last layer must compute every token, or None when token 0 alone will do."""
    if not reads_first_token_only(model.config.model_type, head):
        return f"model.head={head} reads more than the first token"
    last = encoder_layers(model)[-1]
    return None if _layout(last) else f"lorafit knows no first-token form of {type(last).__name__}"


def computes_first_token_only(model: nn.Module) -> bool:
    """Whether the model's last layer runs in its first-token form."""
    return isinstance(encoder_layers(model)[-1], (BertFirstTokenLayer, MPNetFirstTokenLayer))


def compute_last_layer_for_first_token(model: nn.Module, head: str) -> bool:
    """Swap the last encoder layer's forward for its first-token form (same module, weights and
    names) when `head` reads only the first token. Returns whether it did (False: left as it is)."""
    if why_every_token(model, head):
        return False
    if not computes_first_token_only(model):
        last = encoder_layers(model)[-1]
        last.__class__ = _with(_layout(last), type(last))
    return True
