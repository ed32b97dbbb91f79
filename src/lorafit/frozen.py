"""Reuse the frozen lower layers: compute their output once, train only the layers above.

When nothing below encoder layer L is trained, the hidden states entering layer L depend only
on the text, so every epoch (and every search trial) would recompute the same numbers. Here
they are computed once, without dropout, stored in float16 on disk (one file of variable-length
rows, written and read by position, per batch; keyed by model, layer and token ids), and fed back as
`inputs_embeds`: the embeddings' output is replaced by them and the layers below L are skipped.

Without dropout there, the run trains differently from the recipe (bench/FROZEN.md measures what it
changes). Keeping it, the states are computed once per epoch with the dropout
on ("draws"), and epoch e trains on draw e: every epoch sees fresh masks, as without reuse, and the draws
are shared by the trials of a search, where the saving is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cache import human_size
from .errors import LorafitError
from .model import layer_of
from .packaged import cache_root
from .rundir import build_folder

STATES_DTYPE = np.float16


def first_trained_layer(model: nn.Module) -> int:
    """The lowest encoder layer holding a trainable parameter: layers below it can be reused.
    0 when the embeddings train; the layer count when only the head trains."""
    layers = encoder_layers(model)
    lowest = len(layers)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        located = layer_of(name)
        if located:
            lowest = min(lowest, located[0])
        elif ".embeddings." in name:
            return 0
    return lowest


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    for name, module in model.named_modules():
        parent, _, leaf = name.rpartition(".")
        if (
            isinstance(module, nn.ModuleList)
            and leaf in ("layer", "layers")
            and parent.rsplit(".", 1)[-1] in ("encoder", "transformer")
        ):
            return module
    raise LorafitError(f"training.reuse_frozen_layers: no encoder layer list found in {type(model).__name__}")


def _embeddings(model: nn.Module) -> nn.Module:
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "embeddings":
            return module
    raise LorafitError(f"training.reuse_frozen_layers: no embeddings module found in {type(model).__name__}")


class _Stop(Exception):
    pass


class FrozenStates:
    """Per-example hidden states entering layer `layer`, float16, in one file on disk. Rows are
    read per batch (positional reads, kept in the OS page cache), so the process's memory stays
    flat however many rows there are."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets = np.load(folder / "offsets.npy")
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.hidden_size = meta["hidden_size"]
        self.layer = meta["layer"]
        self.dtype = np.dtype(STATES_DTYPE)
        self.file = folder / "states.f16"
        self._fd = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if self._fd is None:  # opened on first read, so a dataloader worker opens its own
            self._fd = os.open(self.file, os.O_RDONLY)
        row_bytes = self.hidden_size * self.dtype.itemsize
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        data = os.pread(self._fd, (stop - start) * row_bytes, start * row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - start, self.hidden_size)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}


class StoredRow:
    """One example's stored states, read only when its batch is built (length grouping needs only its length)."""

    def __init__(self, states: FrozenStates, index: int):
        self.states, self.index = states, index

    def __len__(self) -> int:
        return int(self.states.offsets[self.index + 1] - self.states.offsets[self.index])

    def read(self) -> np.ndarray:
        return self.states[self.index]


def states_key(model_identity: str, layer: int, input_ids) -> str:
    digest = hashlib.sha256(f"{model_identity}|layer {layer}|{np.dtype(STATES_DTYPE).name}".encode())
    for ids in input_ids:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:24]


def frozen_states(
    model: nn.Module,
    dataset,
    layer: int,
    identity: str,
    bf16: bool = False,
    batch_tokens: int = 8192,
    draw: int | None = None,
    seed: int = 0,
    folder: Path | None = None,
) -> FrozenStates:
    """The hidden states entering `layer` for every example of a tokenized dataset, computed once
    (under bf16 autocast as in training when `bf16`) and kept in the cache under a key of the model,
    layer and token ids. Without `draw`, in eval mode: no dropout. Draw d runs the frozen layers'
    dropout with masks fixed by `seed` and d; its key adds both and the dropout rates. `folder`:
    states_folder's answer, when the caller has it already."""
    input_ids = dataset["input_ids"]
    dropout_seed = None if draw is None else int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])
    folder = folder or states_folder(model, input_ids, layer, identity, draw, seed)
    if (folder / "meta.json").is_file():
        return FrozenStates(folder)
    build_folder(folder, lambda staging: _compute(model, input_ids, layer, staging, bf16, batch_tokens, dropout_seed))
    return FrozenStates(folder)


def states_folder(
    model: nn.Module, input_ids, layer: int, identity: str, draw: int | None = None, seed: int = 0
) -> Path:
    """Where the states of these token ids are cached; a dropout draw's key adds the draw, seed and rates."""
    if draw is not None:
        rates = [module.p for module in dropouts_below(model, layer)]
        identity = f"{identity}|dropout draw {draw} of seed {seed}|rates {rates}"
    return cache_root() / "frozen-states" / states_key(identity, layer, input_ids)


def ensure_room(hidden_size: int, wanted: list[tuple[Path, list]]) -> None:
    """Fail before the first batch, not gigabytes in: a large dataset's states on a base-size encoder
    take gigabytes per draw. `wanted`: (folder, token ids) of each store a run needs."""
    missing = [ids for folder, ids in wanted if not (folder / "meta.json").is_file()]
    needed = sum(len(row) for ids in missing for row in ids) * hidden_size * np.dtype(STATES_DTYPE).itemsize
    root = cache_root() / "frozen-states"
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise LorafitError(
            f"training.reuse_frozen_layers: the frozen layers' states need {human_size(needed)} in {root}, "
            f"which has {human_size(free)} free; point LORAFIT_CACHE at a larger disk or turn reuse off"
        )


def _compute(
    model: nn.Module,
    input_ids: list,
    layer: int,
    folder: Path,
    bf16: bool,
    batch_tokens: int,
    dropout_seed: int | None = None,
) -> None:
    from tqdm.auto import tqdm

    lengths = np.array([len(ids) for ids in input_ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden_size = model.config.hidden_size
    row_bytes = hidden_size * np.dtype(STATES_DTYPE).itemsize
    # positional writes, not a memory map: written pages stay in the OS page cache, out of the
    # process's resident memory, which then stays flat however many rows there are (bench/FROZEN.md)
    out = os.open(folder / "states.f16", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    captured = {}

    def capture(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    handle = encoder_layers(model)[layer].register_forward_pre_hook(capture, with_kwargs=True)
    was_training = model.training
    model.train(dropout_seed is not None)
    order = np.argsort(-lengths, kind="stable")  # longest first: the slowest batch shows early
    # with bf16 training the frozen linear weights are stored in bf16 (speedups.cast_frozen_linears)
    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16)
    description = f"frozen layers 0-{layer - 1}" + (" with dropout" if dropout_seed is not None else "")
    description += f", {human_size(int(offsets[-1]) * row_bytes)}"
    try:
        with (
            torch.inference_mode(),
            autocast,
            torch.random.fork_rng(devices=[], enabled=dropout_seed is not None),
            tqdm(total=len(order), desc=description, unit="ex") as bar,
        ):
            if dropout_seed is not None:
                torch.manual_seed(dropout_seed)
            for batch in _token_batches(order, lengths, batch_tokens):
                width = int(lengths[batch].max())
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : lengths[i]] = torch.as_tensor(input_ids[i])
                    mask[row, : lengths[i]] = 1
                try:
                    model(input_ids=ids, attention_mask=mask)
                except _Stop:
                    pass
                hidden = captured.pop("hidden").float().numpy().astype(STATES_DTYPE)
                rows = [hidden[row, : lengths[i]] for row, i in enumerate(batch)]  # padding is not stored
                if not all(np.isfinite(states).all() for states in rows):
                    raise LorafitError(
                        "training.reuse_frozen_layers: the frozen layers' states overflow float16; "
                        "turn training.reuse_frozen_layers off for this model"
                    )
                for states, i in zip(rows, batch):
                    _write(out, states.tobytes(), int(offsets[i]) * row_bytes, folder)
                bar.update(len(batch))
    finally:
        os.close(out)
        handle.remove()
        model.train(was_training)
    np.save(folder / "offsets.npy", offsets)
    (folder / "meta.json").write_text(
        json.dumps({"layer": layer, "hidden_size": hidden_size, "rows": len(lengths)}), encoding="utf-8"
    )


def _write(fd: int, data: bytes, offset: int, folder: Path) -> None:
    try:
        os.pwrite(fd, data, offset)
    except OSError as e:  # a disk filled by something else since ensure_room, a file size limit
        raise LorafitError(
            f"training.reuse_frozen_layers: writing the frozen layers' states in {folder.parent} failed: "
            f"{e.strerror}; point LORAFIT_CACHE at a larger disk or turn reuse off"
        ) from e


def _token_batches(order: np.ndarray, lengths: np.ndarray, batch_tokens: int):
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * int(lengths[batch[0]]) > batch_tokens:
            yield batch
            batch = []
        batch.append(int(i))
    if batch:
        yield batch


class FrozenStatesDataset(torch.utils.data.Dataset):
    """Training examples whose inputs are the stored states; `input_ids` stays for length grouping.
    With several draws of the frozen layers' dropout, epoch e reads draw e (mod their count)."""

    def __init__(self, tokenized, draws: FrozenStates | list[FrozenStates]):
        self.input_ids = tokenized["input_ids"]
        self.labels = tokenized["labels"]
        self.draws = draws if isinstance(draws, list) else [draws]
        self.states = self.draws[0]

    def use_epoch(self, epoch: int) -> None:
        self.states = self.draws[epoch % len(self.draws)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "inputs_embeds": StoredRow(self.states, i), "labels": self.labels[i]}


def collate_states(features: list[dict], pad_to_multiple_of: int = 1) -> dict:
    """Read and pad the stored states per batch (zeros, masked out) and drop the token ids."""
    rows = [f["inputs_embeds"].read() for f in features]
    width = -(-max(len(r) for r in rows) // pad_to_multiple_of) * pad_to_multiple_of
    embeds = torch.zeros((len(rows), width, rows[0].shape[1]), dtype=torch.float32)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, states in enumerate(rows):
        embeds[row, : len(states)] = torch.from_numpy(states.astype(np.float32))
        mask[row, : len(states)] = 1
    return {
        "inputs_embeds": embeds,
        "attention_mask": mask,
        "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long),
    }


def dropouts_below(model: nn.Module, layer: int) -> list[nn.Dropout]:
    """The dropout modules of the embeddings and the layers below `layer` (attention dropout included)."""
    below = [_embeddings(model), *list(encoder_layers(model))[:layer]] if layer else []
    return [module for part in below for module in part.modules() if isinstance(module, nn.Dropout)]


def switch_off_dropout_below(model: nn.Module, layer: int) -> int:
    """No dropout in the embeddings and the layers below `layer`: what the reused layers do, without
    reuse. Returns how many dropout modules were switched off."""
    dropouts = dropouts_below(model, layer)
    for dropout in dropouts:
        dropout.p = 0.0  # the stock dropout returns its input untouched at 0, drawing no random numbers
    return len(dropouts)


class _UpperLayers(nn.ModuleList):
    """The same layers under the same names, but iteration (the encoder's forward loop) starts at `start`."""

    def __init__(self, layers: nn.ModuleList, start: int):
        super().__init__(layers)
        self.start = start

    def __iter__(self):
        return iter(list(self._modules.values())[self.start :])


@contextmanager
def skip_frozen_layers(model: nn.Module, layer: int):
    """While active, the model takes the stored states entering `layer` as `inputs_embeds`: the
    embeddings module passes them on as they are (its positions, norm and dropout are not run:
    the states already went through them) and the layers below `layer` are not run."""
    layers = encoder_layers(model)
    parent_name = next(name for name, module in model.named_modules() if module is layers).rsplit(".", 1)
    parent = model.get_submodule(parent_name[0])
    upper = _UpperLayers(layers, layer)
    setattr(parent, parent_name[1], upper)
    embeddings = _embeddings(model)
    embeddings.forward = _pass_states_on  # an instance attribute: the class's forward is back once deleted
    try:
        yield model
    finally:
        del embeddings.forward
        setattr(parent, parent_name[1], layers)


def _pass_states_on(*args, inputs_embeds=None, **kwargs) -> torch.Tensor:
    # float32, what the embeddings' layer norm returns under autocast too
    return inputs_embeds.float()
