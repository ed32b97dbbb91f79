"""Each bad input or fault of tests/bad_input_cases.py: one clear line, exit status 2, no
traceback, no partial output; inputs that must be handled are handled."""

import pytest
from bad_input_cases import CASES, run_case
from conftest import RECIPES


@pytest.fixture(scope="module")
def tiny_recipe(tiny_roberta, tmp_path_factory):
    import yaml

    recipe = yaml.safe_load((RECIPES / "agnews-report-b.yaml").read_text())
    recipe["model"]["name"] = str(tiny_roberta)
    recipe["training"].update(epochs=1, batch_size=8)
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tiny_finished_run, tiny_recipe, minilm_dir, tmp_path):
    seen = run_case(case, tmp_path / "case", tiny_finished_run, tiny_recipe, minilm_dir)
    assert not seen["traceback"], seen["traceback"]
    assert not seen["leftovers"], seen["leftovers"]
    if case.expect:
        assert seen["status"] == 2, seen
        assert seen["expect"] in seen["message"], seen
        assert seen["stderr"].strip() == seen["message"]  # one line, nothing else
    else:
        assert seen["handled"], seen
