"""CPU speed-ups keep the model's semantics: cheap dropout, its attention, frozen linears in bf16."""

import pytest
import torch

from lorafit.config import LoraSettings, ModelConfig
from lorafit.model import build_lora_model
from lorafit.speedups import (
    CpuDropout,
    attention,
    cast_frozen_linears,
    cpu_dropout,
    install_cpu_dropout,
    keep_lora_inputs_in_bf16,
)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.3])
def test_cpu_dropout_drops_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    out = cpu_dropout(x, p)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 0.002
    assert torch.allclose(out[out != 0], torch.tensor(1 / (1 - p)), rtol=1e-3)
    assert abs(out.mean().item() - 1) < 0.005


def test_cpu_dropout_follows_the_torch_seed_and_is_identity_when_not_training():
    x = torch.randn(64, 48)
    torch.manual_seed(3)
    first = cpu_dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(first, cpu_dropout(x, 0.2))
    assert torch.equal(cpu_dropout(x, 0.2, training=False), x)
    assert torch.equal(CpuDropout(0.2).eval()(x), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_cpu_dropout_keeps_elements_scaled_in_their_own_type_and_drops_the_same_ones_in_every_type(dtype):
    x = torch.randn(300, 70)
    torch.manual_seed(5)
    out = cpu_dropout(x.to(dtype), 0.25)
    torch.manual_seed(5)
    reference = cpu_dropout(x.double(), 0.25)
    assert out.dtype == dtype
    assert torch.equal(out == 0, reference == 0)
    kept = out != 0
    scale = torch.tensor(1 / 0.75, dtype=dtype)
    assert torch.equal(out[kept], x.to(dtype)[kept] * scale)


def test_gradient_flows_only_through_kept_elements():
    x = torch.randn(200, 50, requires_grad=True)
    out = cpu_dropout(x, 0.5)
    out.sum().backward()
    assert torch.equal(x.grad == 0, out == 0)


def test_cpu_dropout_under_torch_compile_matches_eager_as_batch_lengths_change():
    """training.torch_compile with lorafit's dropout: lengths vary by batch, so the graph turns
    dynamic after the first one (where tracing the mask once crashed)."""
    linear = torch.nn.Linear(16, 16)
    step = lambda x: cpu_dropout(linear(x), 0.1)  # noqa: E731
    compiled = torch.compile(step)
    for length in (8, 12, 20):
        x = torch.randn(4, length, 16)
        torch.manual_seed(length)
        expected = step(x)
        torch.manual_seed(length)
        assert torch.equal(compiled(x), expected)


@pytest.fixture(scope="module")
def tiny_lora_model(tiny_roberta):
    torch.manual_seed(0)
    return build_lora_model(
        ModelConfig(name=str(tiny_roberta)), LoraSettings(targets=["query", "value"], r=4), ["a", "b", "c", "d"]
    )


def test_installed_model_swaps_every_dropout_and_predicts_the_same(tiny_lora_model):
    inputs = {
        "input_ids": torch.tensor([[0, 713, 16, 10, 1296, 2], [0, 713, 2, 1, 1, 1]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]),
    }
    before = tiny_lora_model.eval()(**inputs).logits
    stock = sum(type(m) is torch.nn.Dropout for m in tiny_lora_model.modules())
    assert install_cpu_dropout(tiny_lora_model) == stock > 0
    assert not any(type(m) is torch.nn.Dropout for m in tiny_lora_model.modules())
    assert torch.allclose(tiny_lora_model.eval()(**inputs).logits, before, atol=1e-6)
    tiny_lora_model.train()
    assert not torch.equal(tiny_lora_model(**inputs).logits, tiny_lora_model(**inputs).logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_training_attention_equals_sdpa_with_the_same_gradients_when_nothing_is_dropped(mask_kind, dtype):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = torch.nn.Module().train()
    module.is_causal = False
    q, k, v = (torch.randn(3, 2, 7, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    keep = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    keep[0, ..., 4:] = False
    mask = {"bool": keep, "additive": torch.zeros(3, 1, 7, 7).masked_fill(~keep, -1e9), "none": None}[mask_kind]
    ours, _ = attention(module, q, k, v, mask, dropout=1e-9)  # p rounds to 0 of 65536 levels: nothing dropped
    reference, _ = sdpa_attention_forward(module.eval(), q, k, v, mask, dropout=0.0)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(ours.float(), reference.float(), atol=tolerance)
    for our_gradient, reference_gradient in zip(gradients(ours, (q, k, v)), gradients(reference, (q, k, v))):
        assert torch.allclose(our_gradient.float(), reference_gradient.float(), atol=tolerance * 4)


def gradients(output: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(output.float().square().sum(), inputs)


def test_frozen_linears_in_bf16_give_the_autocast_result(tiny_roberta):
    torch.manual_seed(0)
    model = build_lora_model(
        ModelConfig(name=str(tiny_roberta)), LoraSettings(targets=["query", "value"], r=4), ["a", "b"]
    ).eval()
    inputs = {"input_ids": torch.tensor([[0, 713, 16, 10, 1296, 2]])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(**inputs).logits.float()
        assert cast_frozen_linears(model) > 0
        after = model(**inputs).logits.float()
    assert torch.allclose(before, after, atol=1e-2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen_linear = model.base_model.model.roberta.encoder.layer[0].attention.self.key
    assert frozen_linear.weight.dtype == torch.bfloat16


def test_lora_inputs_kept_in_bf16_give_the_same_logits_and_gradients_without_the_fp32_copy(tiny_roberta):
    torch.manual_seed(0)
    targets = ["query", "value", "attention_output", "ffn_out"]  # the last two take bf16 inputs under autocast
    model = build_lora_model(ModelConfig(name=str(tiny_roberta)), LoraSettings(targets=targets, r=4), ["a", "b"])
    model.eval()  # no dropout: both ways must compute the same numbers
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; the adapters' path must count
            torch.nn.init.normal_(parameter, std=0.05)
    inputs = {"input_ids": torch.tensor([[0, 713, 16, 10, 1296, 2]]), "labels": torch.tensor([1])}
    dropout_inputs = []
    for name, module in model.named_modules():
        if name.endswith("lora_dropout.default"):
            module.register_forward_pre_hook(lambda _, args: dropout_inputs.append(args[0].dtype))

    def step():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**inputs)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
        return out.logits.float(), grads

    logits, grads = step()
    assert set(dropout_inputs) == {torch.float32}  # PEFT's copy
    dropout_inputs.clear()
    assert keep_lora_inputs_in_bf16(model) > 0
    kept_logits, kept_grads = step()
    assert torch.bfloat16 in dropout_inputs
    assert torch.equal(logits, kept_logits)
    assert grads.keys() == kept_grads.keys() and any("lora_A" in n for n in grads)
    assert all(torch.equal(grads[n], kept_grads[n]) for n in grads)
