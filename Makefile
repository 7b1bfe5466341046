# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# torch goes in first, with an exact pin, so that nothing later pulls another (multi-GB) build.
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin

# Nothing is downloaded at run time: models are built from config, data ships with the package.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HOME ?= $(CURDIR)/.cache/huggingface
export TOKENIZERS_PARALLELISM := false

.PHONY: install compat demo test test-slow lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The lowest and the newest transformers a saved model's requirements allow, each in a folder as a user's
# environment (pip install --target), for tests/test_supported_versions.py (about 30 s and 500 MB, once).
COMPAT ?= .cache/compat
compat: $(COMPAT)/.built

$(COMPAT)/.built: $(VENV)/.installed mtl_hf/models/mtl_vit/saving_mtl_vit.py tests/compat/build_envs.py
	$(BIN)/python tests/compat/build_envs.py $(COMPAT)
	touch $@

# The demo recipe through accelerate, as any recipe runs: 5 tasks on the built-in shop photos.
# A second `make demo` stops rather than replace outputs/demo: `make demo DEMO_ARGS="--overwrite_output_dir true"`.
# --quiet: that refusal is one line, without accelerate's traceback of the launched process's exit status.
DEMO_ARGS ?=
demo: install
	$(BIN)/accelerate launch --quiet --config_file recipes/accelerate_configs/cpu.yaml \
		recipes/train.py recipes/configs/demo.yaml $(DEMO_ARGS)

# Lint first (seconds), then the fast suite: what CI runs. Test files run in TEST_WORKERS processes
# (pytest-xdist; a file's tests stay in one process), each computing on one thread, so that two workers
# share the machine's cores instead of oversubscribing them.
TEST_WORKERS ?= 2
test: lint compat
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check mtl_hf tests recipes bench
	$(BIN)/ruff format --check mtl_hf tests recipes bench
	$(BIN)/vermin --quiet --no-tips --violations --eval-annotations --target=3.10- mtl_hf

clean:
	rm -rf $(VENV) .cache outputs .pytest_cache
