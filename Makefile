# make quickstart   create .venv, install, train recipes/quickstart.yaml (DATA=path for a local file)
# make test         the whole test suite (what CI runs)
# make test-fast    the inner loop: every test not marked slow (pytest -m "not slow")
# make lint         ruff: lint and formatting (CI runs it first)
# make bench        speed: the reports' pipeline against lorafit's defaults -> bench/RESULTS.md
# make bench-frozen reused frozen layers on all-mpnet-base-v2 -> bench/FROZEN.md
# make bench-paths  every inference path on this kind of CPU -> bench/PATHS.md (MPNET_RUN=run adds MPNet)
# make bench-dropout    lorafit's CPU dropout against torch's, on MPNet training steps -> bench/DROPOUT.md
# make bench-casts      LoRA inputs left in bf16 against PEFT's fp32 copy, on MPNet training steps -> bench/CASTS.md
# make bench-first-token  the last layer for the first token alone against the stock layer, on MPNet training
#                        steps -> bench/FIRST_TOKEN.md
# make bench-attention  lorafit's attention forms (MiniLM training, MPNet fused) against the ones they replace
#                        -> bench/ATTENTION.md
# make bench-step-forms  training-step forms tried, not in lorafit (fused qkv, LoRA added in its matmul, ffn in
#                        chunks) -> bench/STEP_FORMS.md
# make bench-optimizer  AdamW's step fused against torch's per-tensor CPU default -> bench/OPTIMIZER.md
# make bench-compile    torch.compile against eager, inference and training -> bench/COMPILE.md
# make bench-allocator  glibc's memory allocator against jemalloc, tcmalloc, mimalloc -> bench/ALLOCATOR.md
# make bench-padding    training batches padded to a multiple of 1, 8, 16 tokens -> bench/PADDING.md
# make bench-avx2       bench-dropout and bench-frozen as on an AVX2-only CPU: oneDNN, MKL and torch's kernels
#                        capped at AVX2 (no bf16 units); the tables name the cap. Not bench-paths: int8 (FBGEMM)
#                        and onnxruntime (MLAS) choose their kernels by CPUID, past any cap
# make bench-tracking   one AG News run in TensorBoard and MLflow, read back and plotted -> bench/TRACKING.md
# Scripts without a target (they print JSON): bench/serve_ab.py RUN OLD_SRC (two server builds under the same
#   load, in turns), bench/onnx_first_token.py RUN (the ONNX graph with and without the first-token last layer)
# make accuracy     what each setting buys under the budget (MiniLM) -> bench/ACCURACY.md
#                   (make accuracy-search first runs the hyperparameter search it reports)
# make reliability  every bad input and fault, what the user sees -> docs/RELIABILITY.md
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
TORCH_VERSION ?= 2.13.0
# where torch comes from: empty = pip's configured index. On the public PyPI even a pinned Linux
# wheel is the multi-GB CUDA build; TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU one
TORCH_INDEX ?=

.PHONY: install quickstart test test-fast lint bench bench-frozen bench-paths bench-dropout bench-casts bench-first-token bench-attention bench-step-forms bench-optimizer bench-compile bench-allocator bench-padding bench-avx2 bench-tracking accuracy accuracy-search reliability clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, from TORCH_INDEX when given, so the project's install keeps it
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/lorafit plan recipes/quickstart.yaml
	$(VENV)/bin/lorafit train recipes/quickstart.yaml $(if $(DATA),data.train=$(DATA)) --output-dir runs/quickstart --overwrite
	$(VENV)/bin/lorafit classify runs/quickstart \
		"Yankees rally in the ninth to beat the Red Sox" \
		"Oil prices climb as OPEC signals output cuts" \
		"New chip doubles battery life of laptops"

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: install
	$(PY) bench/bench.py

bench-frozen: install
	$(PY) bench/frozen.py

bench-paths: install
	$(PY) bench/paths.py $(if $(MPNET_RUN),--mpnet-run $(MPNET_RUN))

bench-dropout: install
	$(PY) bench/dropout.py

bench-casts: install
	$(PY) bench/casts.py

bench-first-token: install
	$(PY) bench/first_token.py

bench-attention: install
	$(PY) bench/attention.py

bench-step-forms: install
	$(PY) bench/step_forms.py

bench-optimizer: install
	$(PY) bench/optimizer.py

bench-compile: install
	$(PY) bench/compile.py

bench-allocator: install
	$(PY) bench/allocator.py

bench-padding: install
	$(PY) bench/padding.py

# a newer CPU run as an AVX2-only one: the caps of oneDNN (bf16 matmuls), MKL (fp32 matmuls), torch's kernels
AVX2_ONLY := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2

bench-avx2: install
	$(AVX2_ONLY) $(MAKE) bench-dropout bench-frozen

bench-tracking: install
	$(PY) bench/tracking.py

accuracy-search: install
	$(PY) bench/accuracy.py --search

accuracy: install
	$(PY) bench/accuracy.py

reliability: install
	$(PY) bench/reliability.py

clean:
	rm -rf runs .pytest_cache
