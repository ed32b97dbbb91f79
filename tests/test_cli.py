"""Argument parsing: overrides anywhere, no abbreviated options."""

import json

import pytest
from conftest import RECIPES

from lorafit.cli import main


def test_overrides_may_follow_options(capsys):
    recipe = str(RECIPES / "quickstart.yaml")
    assert main(["plan", recipe, "lora.r=8", "--json"]) == 0
    at_rank_8 = json.loads(capsys.readouterr().out)
    assert main(["plan", recipe, "--json", "lora.r=3", "budget.max_trainable=500000"]) == 0
    at_rank_3 = json.loads(capsys.readouterr().out)
    assert at_rank_3["budget"] == 500_000
    assert at_rank_3["lora"] * 8 == at_rank_8["lora"] * 3  # LoRA parameters grow linearly with the rank


def test_abbreviated_options_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(RECIPES / "quickstart.yaml"), "--npr", "2"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --npr" in capsys.readouterr().err


def test_debug_before_the_command_shows_the_traceback():
    from lorafit.errors import LorafitError

    assert main(["plan", str(RECIPES / "quickstart.yaml"), "lora.r=x"]) == 2
    with pytest.raises(LorafitError, match="lora.r must be an integer"):
        main(["--debug", "plan", str(RECIPES / "quickstart.yaml"), "lora.r=x"])


def test_import_and_help_do_not_load_torch():
    import subprocess
    import sys

    code = (
        "import sys, lorafit, lorafit.cli\n"
        "try:\n    lorafit.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
