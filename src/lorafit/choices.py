"""The named choices of recipes and commands, in one place and without heavy imports: the recipe
schema (config.py) types its fields with them, and the CLI offers them (`lorafit --help` stays fast)."""

from typing import Literal

# transformers' schedules that need no arguments beyond warmup (checked against SchedulerType in the tests)
Scheduler = Literal[
    "cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"
]
# The half precisions: the torch dtype, and whether a CPU trains in it (accelerate applies no fp16
# autocast on a CPU). Training (the TrainingArguments flag of the same name), inference (the merged
# model stored in that dtype), the schema and the CLI all read this table: a new one is an entry here.
HALF_PRECISIONS = {
    "bf16": {"dtype": "bfloat16", "trains_on_cpu": True},
    "fp16": {"dtype": "float16", "trains_on_cpu": False},
}
TrainingPrecision = Literal[("auto", *HALF_PRECISIONS, "fp32")]
# inference adds PyTorch's dynamic int8 and onnxruntime's paths to the training precisions
InferencePrecision = Literal[("auto", *HALF_PRECISIONS, "fp32", "int8", "ort-fp32", "ort-int8")]
# `training.metric_for_best`: the validation score that picks the best epoch (and search's best trial)
BestMetric = Literal["accuracy", "macro_f1", "weighted_f1", "loss"]
# metric -> (its key in metrics.json; the Trainer logs it as eval_<key>), whether higher is better
BEST_METRICS = {
    "accuracy": ("accuracy", True),
    "macro_f1": ("macro_f1", True),
    "weighted_f1": ("f1", True),
    "loss": ("loss", False),
}
# `lorafit baseline --classifier`: the linear model on the TF-IDF features
BaselineClassifier = Literal["logistic-regression", "linear-svm"]
