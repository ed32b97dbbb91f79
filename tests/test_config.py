import pytest
from conftest import RECIPES

from lorafit.config import SCHEDULERS, apply_overrides, load_recipe, recipe_from_dict
from lorafit.errors import LorafitError


def test_report_recipes_carry_the_reports_settings():
    a = load_recipe(RECIPES / "agnews-report-a.yaml")
    assert (a.lora.r, a.lora.lora_alpha, a.lora.lora_dropout) == (7, 77, 0.01)
    assert (a.training.learning_rate, a.training.epochs, a.training.batch_size) == (3e-5, 6, 64)
    assert (a.training.scheduler, a.training.weight_decay, a.data.max_length) == ("cosine", 0.1, 256)
    assert a.data.length_percentiles == [1, 99]
    b = load_recipe(RECIPES / "agnews-report-b.yaml")
    assert (b.lora.r, b.lora.lora_alpha, b.lora.lora_dropout) == (16, 32, 0.05)
    assert (b.model.hidden_dropout, b.model.attention_dropout, b.model.classifier_dropout) == (0.2, 0.2, 0.3)
    assert (b.training.warmup_ratio, b.training.gradient_accumulation_steps, b.training.epochs) == (0.15, 2, 5)
    assert (b.data.validation_size, b.data.seed) == (640, 42)


def test_dotted_overrides_reach_nested_keys_and_parse_yaml_values():
    recipe = load_recipe(
        RECIPES / "quickstart.yaml",
        [
            "training.learning_rate=3e-5",
            "data.limit=100",
            "data.length_percentiles=[1, 99]",
            "lora.targets=[query]",
            "model.classifier_dropout=null",
        ],
    )
    assert recipe.training.learning_rate == pytest.approx(3e-5)
    assert recipe.data.limit == 100
    assert recipe.data.length_percentiles == [1.0, 99.0]
    assert recipe.lora.targets == ["query"]
    assert recipe.model.classifier_dropout is None


def test_unknown_key_is_rejected_with_the_closest_valid_one():
    with pytest.raises(LorafitError, match="unknown key 'learning_rat'; did you mean 'learning_rate'"):
        recipe_from_dict({"training": {"learning_rat": 1e-4}})
    with pytest.raises(LorafitError, match="unknown key 'trainig'; did you mean 'training'"):
        recipe_from_dict({"trainig": {}})


def test_wrong_types_name_the_key_and_value():
    with pytest.raises(LorafitError, match=r"training.epochs must be a finite number, got 'many'"):
        recipe_from_dict({"training": {"epochs": "many"}})
    with pytest.raises(LorafitError, match=r"lora.r must be an integer, got 'big'"):
        recipe_from_dict({"lora": {"r": "big"}})
    with pytest.raises(LorafitError, match=r"model.trust_remote_code must be true or false"):
        recipe_from_dict({"model": {"trust_remote_code": "yes please"}})


def test_invalid_values_are_explained():
    with pytest.raises(LorafitError, match="lora.r must be at least 1"):
        recipe_from_dict({"lora": {"r": 0}})
    with pytest.raises(LorafitError, match=r"lora.targets\[0\].layers\[0\] must be an integer, got 'x'"):
        recipe_from_dict({"lora": {"targets": [{"modules": ["query"], "layers": ["x"]}]}})
    with pytest.raises(LorafitError, match="length_percentiles"):
        recipe_from_dict({"data": {"length_percentiles": [99, 1]}})


def test_a_scheduler_typo_is_refused_before_any_data_loads():
    from transformers.trainer_utils import SchedulerType

    with pytest.raises(LorafitError, match="training.scheduler 'cosin' is not one of: .*did you mean 'cosine'"):
        recipe_from_dict({"training": {"scheduler": "cosin"}})
    for scheduler in SCHEDULERS:  # every offered schedule is one transformers knows
        assert SchedulerType(recipe_from_dict({"training": {"scheduler": scheduler}}).training.scheduler)


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(LorafitError, match="must look like key.sub=value"):
        apply_overrides({}, ["training.epochs"])


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(LorafitError, match="nope.yaml not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_the_readme_key_table_is_the_schema():
    from conftest import ROOT

    from lorafit.config import keys_markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- recipe-keys:begin -->\n")[1].split("<!-- recipe-keys:end -->")[0]
    assert table == keys_markdown(), "README's recipe keys differ from the schema: paste `lorafit schema --markdown`"


def test_the_json_schema_describes_every_key():
    from lorafit.config import SECTIONS, json_schema

    schema = json_schema()
    for section, model in SECTIONS.items():
        properties = schema["$defs"][model.__name__]["properties"]
        assert set(properties) == set(model.model_fields)
        assert all(p.get("description") for p in properties.values()), section
    assert schema["additionalProperties"] is False  # unknown keys are flagged in the editor too
