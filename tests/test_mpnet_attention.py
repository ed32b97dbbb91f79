"""MPNet's fused attention gives the stock attention's numbers: outputs and gradients, with and without
dropout, padded or not, in fp32 and under bf16 autocast; on the real all-mpnet-base-v2 in a trained run, also
through the onnxruntime graph exported from it."""

import numpy as np
import pytest
import torch
from transformers import MPNetConfig, MPNetModel
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

from lorafit.mpnet_attention import FusedMPNetSelfAttention, fuse_mpnet_attention

INPUTS = {
    "input_ids": torch.tensor([[0, 1997, 2650, 2003, 1037, 3231, 2], [0, 2054, 2, 1, 1, 1, 1]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]]),
}


def tiny_mpnet(attention_dropout: float) -> MPNetModel:
    config = MPNetConfig(
        vocab_size=4000,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        attention_probs_dropout_prob=attention_dropout,
    )
    torch.manual_seed(0)
    return MPNetModel(config)


def output_and_gradients(model: MPNetModel, seed: int = 7) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(seed)
    output = model(**INPUTS).last_hidden_state
    output.square().sum().backward()
    return output.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(("attention_dropout", "training"), [(0.0, False), (0.0, True), (0.3, True)])
def test_fused_attention_gives_the_stock_outputs_and_gradients(attention_dropout, training):
    model = tiny_mpnet(attention_dropout).train(training)
    stock_output, stock_gradients = output_and_gradients(model)
    assert fuse_mpnet_attention(model) == 3
    assert fuse_mpnet_attention(model) == 0  # already fused
    output, gradients = output_and_gradients(model)  # the same seed: the same dropout masks
    assert torch.allclose(output, stock_output, atol=1e-5)
    assert len(gradients) == len(stock_gradients) > 20
    for gradient, stock_gradient in zip(gradients, stock_gradients):
        assert torch.allclose(gradient, stock_gradient, atol=1e-5, rtol=1e-4)


def test_fused_attention_under_bf16_autocast_stays_close_to_the_stock_one():
    model = tiny_mpnet(0.0).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stock = model(**INPUTS).last_hidden_state.float()
        fuse_mpnet_attention(model)
        fused = model(**INPUTS).last_hidden_state.float()
    assert torch.isfinite(fused).all()
    assert torch.allclose(fused, stock, atol=5e-2)


def test_asking_for_attention_weights_runs_the_stock_forward():
    model = tiny_mpnet(0.0).eval()
    fuse_mpnet_attention(model)
    out = model(**INPUTS, output_attentions=True)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (2, 2, 7, 7)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 2, 7), atol=1e-5)


def test_a_trained_mpnet_run_predicts_the_same_fused_stock_and_through_onnxruntime(mpnet_dir, agnews_csv, tmp_path):
    from conftest import RECIPES, run_cli

    from lorafit.inference import load_run, predict_proba

    run_dir = tmp_path / "run"
    trained = run_cli(
        "train",
        str(RECIPES / "quickstart.yaml"),
        f"model.name={mpnet_dir}",
        f"data.train={agnews_csv}",
        "data.limit=96",
        "data.validation_size=32",
        "data.max_length=48",
        "budget.max_trainable=2000000",  # MPNet's dense head is 590,592 of them
        "training.epochs=1",
        "--output-dir",
        str(run_dir),
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    fused_run = load_run(run_dir, precision="fp32")
    attention_modules = [layer.attention.attn for layer in fused_run.model.base_model.encoder.layer]
    assert all(isinstance(module, FusedMPNetSelfAttention) for module in attention_modules)
    texts = ["Stocks fell as oil rose.", "The team won the cup after a long season."]
    stock_run = load_run(run_dir, precision="fp32", first_token=False)  # the stock last layer too
    for layer in stock_run.model.base_model.encoder.layer:
        layer.attention.attn.__class__ = MPNetSelfAttention
    fused = predict_proba(fused_run, texts)
    assert np.allclose(fused, predict_proba(stock_run, texts), atol=1e-5)
    # the onnxruntime path's graph is exported from the fused model
    assert np.allclose(fused, predict_proba(load_run(run_dir, precision="ort-fp32"), texts), atol=1e-4)
