"""The named choices of recipes and commands, in one place and without heavy imports: the recipe
schema (config.py) types its fields with them, and the CLI offers them (`lorafit --help` stays fast)."""

from typing import Literal

# transformers' schedules that need no arguments beyond warmup (checked against SchedulerType in the tests)
Scheduler = Literal[
    "cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"
]
TrainingPrecision = Literal["auto", "bf16", "fp16", "fp32"]
# inference adds PyTorch's dynamic int8 and onnxruntime's paths to the training precisions
InferencePrecision = Literal["auto", "bf16", "fp16", "fp32", "int8", "ort-fp32", "ort-int8"]
# `lorafit baseline --classifier`: the linear model on the TF-IDF features
BaselineClassifier = Literal["logistic-regression", "linear-svm"]
