"""`lorafit push`: a run (adapter, card, plots) or its merged export to a Hugging Face Hub repository.
The folder is staged first, so what would be uploaded can be inspected (`--stage-only DIR`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from . import rundir
from .card import portable_info, write_card
from .errors import LorafitError

# the run's files that a colleague needs to load it with lorafit or PEFT; the training texts
# (validation_predictions.csv) and the recipe as typed on this machine (recipe.yaml) stay home
RUN_FILES = (rundir.ADAPTER_CONFIG, rundir.ADAPTER_WEIGHTS, rundir.HEAD_WEIGHTS, rundir.LABELS_JSON,
             rundir.METRICS_JSON, rundir.HISTORY_CSV, rundir.COMPLETE)  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "sentencepiece.bpe.model", "spm.model")  # fmt: skip


def stage(run_dir: Path, folder: Path, merged: bool = False) -> Path:
    """Write what `push` uploads into `folder` (which must not exist): the run's adapter, tokenizer,
    card and plots, or with `merged` the stock transformers export. No path of this machine is in it."""
    rundir.read_run_info(run_dir)  # a finished run, or the error that says what is missing
    if merged:
        from .export import export_run

        return export_run(run_dir, folder)

    def build(staging: Path) -> None:
        for name in (*RUN_FILES, *TOKENIZER_FILES):
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, staging / name)
        if (run_dir / rundir.PLOTS).is_dir():
            shutil.copytree(run_dir / rundir.PLOTS, staging / rundir.PLOTS)
        info = json.loads((run_dir / rundir.RUN_JSON).read_text(encoding="utf-8"))
        rundir.write_json(staging / rundir.RUN_JSON, portable_info(info))
        write_card(staging)

    if folder.exists():
        raise LorafitError(f"{folder} already exists; choose another folder")
    return rundir.build_folder(folder, build)


def push(run_dir: str | Path, repo_id: str, merged: bool = False, private: bool = False) -> str:
    """Stage the folder, create the repository if needed and upload; returns the commit URL."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="lorafit-push-") as temporary:
        folder = stage(Path(run_dir), Path(temporary) / "upload", merged)
        api = HfApi()
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                folder_path=str(folder), repo_id=repo_id, commit_message=f"lorafit push of {Path(run_dir).name}"
            )
        except Exception as e:  # offline, no token, no rights: the hub raises many types
            raise LorafitError(
                f"push to {repo_id} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
                "(log in with `hf auth login`; stage the folder alone with --stage-only DIR)"
            ) from None
    return commit.commit_url
