"""The last layer computed for the first token alone: what a first-token head reads is unchanged,
forward and backward, on each known layer layout (BERT's, RoBERTa's, MPNet's)."""

import pytest
import torch

from lorafit.config import LoraSettings, ModelConfig
from lorafit.first_token import compute_last_layer_for_first_token
from lorafit.frozen import encoder_layers
from lorafit.model import build_lora_model
from lorafit.speedups import install_cpu_dropout

LINEAR_MODULES = ["query", "key", "value", "attention_output", "ffn_in", "ffn_out"]
TEXTS = ["Stocks fell as oil rose.", "The team won the cup after a long season of hard work and a little luck."]


@pytest.fixture(params=["minilm", "roberta", "mpnet"])
def model_dir(request):
    return request.getfixturevalue(
        {"minilm": "minilm_dir", "roberta": "tiny_roberta", "mpnet": "mpnet_dir"}[request.param]
    )


def lora_model(model_dir, head: str):
    """LoRA on every linear module of the last two layers: the last one's query, output and feed-forward
    adapters get their gradient through token 0 alone, the one below through the last layer's keys and values."""
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    top_two = [{"modules": LINEAR_MODULES, "layers": [layers - 2, layers - 1]}]
    torch.manual_seed(0)
    model = build_lora_model(
        ModelConfig(name=str(model_dir), head=head), LoraSettings(targets=top_two, r=4), list("abcd")
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; the adapters' path must count
            torch.nn.init.normal_(parameter, std=0.05)
    return model


def logits_and_gradients(model, inputs) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    out = model(**inputs, labels=torch.tensor([1, 3]))
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("head", ["default", "linear"])
def test_first_token_layer_gives_the_same_logits_and_gradients(model_dir, head):
    from transformers import AutoTokenizer

    inputs = dict(AutoTokenizer.from_pretrained(model_dir)(TEXTS, padding=True, return_tensors="pt"))
    model = lora_model(model_dir, head).eval()  # eval: no dropout, so both ways compute the same numbers
    stock_logits, stock_gradients = logits_and_gradients(model, inputs)
    assert compute_last_layer_for_first_token(model, head)
    logits, gradients = logits_and_gradients(model, inputs)
    assert torch.allclose(logits, stock_logits, atol=1e-5)
    assert gradients.keys() == stock_gradients.keys() and len(gradients) > 20
    for name, gradient in gradients.items():
        assert torch.allclose(gradient, stock_gradients[name], atol=1e-5, rtol=1e-4), name
    # the work saved: the encoder's last hidden state holds token 0 alone
    encoder = model.base_model.model.base_model
    assert encoder(**inputs).last_hidden_state.shape[1] == 1


def test_first_token_layer_trains_with_the_cheap_dropout(minilm_dir):
    from transformers import AutoTokenizer

    inputs = dict(AutoTokenizer.from_pretrained(minilm_dir)(TEXTS, padding=True, return_tensors="pt"))
    model = lora_model(minilm_dir, "default")
    install_cpu_dropout(model)
    assert compute_last_layer_for_first_token(model, "default")
    model.train()
    first, gradients = logits_and_gradients(model, inputs)
    assert not torch.equal(first, logits_and_gradients(model, inputs)[0])  # dropout acts in training
    assert all(torch.isfinite(g).all() for g in gradients.values())


def test_a_mean_head_keeps_the_stock_last_layer(minilm_dir):
    model = lora_model(minilm_dir, "mean")
    stock = type(encoder_layers(model)[-1])
    assert not compute_last_layer_for_first_token(model, "mean")
    assert type(encoder_layers(model)[-1]) is stock


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        ([], "last layer computes the first token alone: the head reads no more"),
        (["model.head=mean"], "last layer computes every token: model.head=mean reads more than the first token"),
        (["training.last_layer_first_token=false"], "every token: training.last_layer_first_token=false"),
    ],
)
def test_plan_says_what_the_last_layer_computes(roberta_dir, overrides, line):
    from conftest import RECIPES

    from lorafit.budget import format_plan, plan
    from lorafit.config import load_recipe

    recipe = load_recipe(RECIPES / "agnews-report-b.yaml", [f"model.name={roberta_dir}", *overrides])
    assert line in format_plan(plan(recipe))
