"""The classifier heads (`model.head`) and the extra dropout in front of them, as modules.

- default: the model's own head, as the reports used it.
- linear / mean: pooling (the first token / the mean of the real tokens), dropout, one linear
  layer. The model's forward hands the attention mask to the pooling (`PooledClassification`).
- lora-dense: the model's own head with its dense layer (RoBERTa) or pooler (BERT) adapted by
  LoRA and its output layer trained. RoBERTa's head dense layer is not pretrained: its frozen
  weights are drawn once and saved in the run (`frozen_head_weights`).

`model.classifier_dropout` (report B's Dropout(0.3) before the classifier) is a dropout module
inside the head. Weight names stay the stock model's (`classifier.out_proj`, `classifier`), so
adapters trained before heads became modules load unchanged.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from .errors import LorafitError


class FirstToken(nn.Module):
    """The first token's final hidden state (what a BERT pooler reads), without a dense layer."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return hidden_states[:, 0]


class MaskedMean(nn.Module):
    """The mean of the final hidden states over real tokens (how sentence-transformers encoders
    such as all-MiniLM-L6-v2 and all-mpnet-base-v2 were trained)."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            return hidden_states.mean(dim=1)
        weights = attention_mask[..., None].to(hidden_states.dtype)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


POOLING = {"linear": FirstToken, "mean": MaskedMean}


class Pooling(nn.Module):
    """Pooling, then dropout: what a pooled head does before its linear layer."""

    def __init__(self, kind: str, dropout: float):
        super().__init__()
        self.pool = POOLING[kind]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(self.pool(hidden_states, attention_mask))


class OutProj(nn.Module):
    """One linear layer, under RoBERTa's name for it (`classifier.out_proj`)."""

    def __init__(self, hidden_size: int, num_labels: int, init_std: float):
        super().__init__()
        self.out_proj = nn.Linear(hidden_size, num_labels)
        nn.init.normal_(self.out_proj.weight, std=init_std)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out_proj(features)


class PooledClassification:
    """The forward pass of a *ForSequenceClassification model whose head pools the encoder's final
    hidden states: encoder -> `pooling` (given the attention mask) -> `classifier`."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = {"input_ids": input_ids, "token_type_ids": token_type_ids, "inputs_embeds": inputs_embeds}
        encoder = getattr(self, self.base_model_prefix)
        hidden = encoder(attention_mask=attention_mask, **{k: v for k, v in inputs.items() if v is not None})[0]
        logits = self.classifier(self.pooling(hidden, attention_mask))
        loss = (
            nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
            if labels is not None
            else None
        )
        return SequenceClassifierOutput(loss=loss, logits=logits)


class InputDropout:
    """A stock head with dropout on its input (report B's extra Dropout(0.3) before the classifier)."""

    def forward(self, features: torch.Tensor, *args, **kwargs):
        return super().forward(self.input_dropout(features), *args, **kwargs)


@cache
def _with(mixin: type, cls: type) -> type:
    """`cls` with `mixin`'s forward: the same module, weights and names, another forward pass."""
    return type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {})


def _combined(p: float, extra: float | None) -> float:
    """Two dropouts in a row drop a unit with probability 1 - (1-p)(1-extra): one dropout does it."""
    return 1 - (1 - p) * (1 - (extra or 0.0))


def apply_head(model, head: str, classifier_dropout: float | None = None) -> dict:
    """Reshape the classifier for `model.head`; returns the LoRA targets and trainable modules it
    adds: {"targets": [...], "modules_to_save": [...] or None (the task type's default)}."""
    classifier = getattr(model, "classifier", None)
    encoder = getattr(model, model.base_model_prefix, None)
    pooler_dense = getattr(getattr(encoder, "pooler", None), "dense", None)
    roberta_style = classifier is not None and hasattr(classifier, "dense") and hasattr(classifier, "out_proj")
    bert_style = isinstance(classifier, nn.Linear) and pooler_dense is not None
    if head in POOLING and (roberta_style or bert_style):
        config = model.config
        if roberta_style:  # dense + tanh + out_proj on the first token -> one linear layer
            dropout = classifier.dropout.p
            with torch.device(next(classifier.parameters()).device):
                model.classifier = OutProj(config.hidden_size, config.num_labels, config.initializer_range)
        else:  # BERT-style: pooler + dropout + linear -> the pooling replaces the pooler
            dropout, encoder.pooler = model.dropout.p, None
        model.pooling = Pooling(head, _combined(dropout, classifier_dropout))
        model.__class__ = _with(PooledClassification, type(model))
        return {"targets": [], "modules_to_save": None}
    if head in POOLING:
        raise LorafitError(f"model.head={head} is not available for {type(model).__name__}; use model.head=default")
    if classifier_dropout:
        _add_input_dropout(model, classifier_dropout)
    if head == "default":
        return {"targets": [], "modules_to_save": None}
    if roberta_style:
        return {"targets": ["classifier.dense"], "modules_to_save": ["classifier.out_proj"]}
    if bert_style:
        return {"targets": [f"{model.base_model_prefix}.pooler.dense"], "modules_to_save": ["classifier"]}
    raise LorafitError(f"model.head={head} is not available for {type(model).__name__}; use model.head=default")


def _add_input_dropout(model, probability: float) -> None:
    for name in ("classifier", "score", "pre_classifier"):
        head = getattr(model, name, None)
        if head is not None:
            head.__class__ = _with(InputDropout, type(head))
            head.input_dropout = nn.Dropout(probability)
            return
    raise LorafitError(f"model.classifier_dropout: no classifier head found in {type(model).__name__}")


def frozen_head_weights(model, head: str) -> dict[str, torch.Tensor]:
    """The head's frozen weights that no checkpoint holds: RoBERTa's head dense layer under
    `lora-dense` (not pretrained, not trained, so not in the adapter). Saved with the run."""
    classifier = getattr(model, "classifier", None)
    if head != "lora-dense" or not hasattr(classifier, "dense"):
        return {}
    dense = classifier.dense
    dense = getattr(dense, "base_layer", dense)  # under PEFT: the frozen layer inside the LoRA wrapper
    return {"classifier.dense.weight": dense.weight.detach().cpu(), "classifier.dense.bias": dense.bias.detach().cpu()}


def load_frozen_head_weights(model, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, tensor in weights.items():
            model.get_parameter(name).copy_(tensor)
