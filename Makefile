# The two quick-start commands: `make demo` (set up, train the default GAN) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision: the releases these machines keep on disk (a CUDA build that runs on the CPU)
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast lint setup gallery bench

$(BIN)/ganforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/ganforge

demo: setup
	$(BIN)/ganforge train

# one worker per core, whole files each (module fixtures are built once), one torch thread per worker
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# the README's headline figures rerun here, printed beside the committed ones (about 45 minutes on 2 cores)
bench: setup
	$(BIN)/python benchmarks/headline.py

# the chapter's figures remade into docs/gallery/ and docs/gallery.md (38 minutes on 2 cores of an Intel Xeon with AMX: docs/gallery/total.json; restartable)
gallery: setup
	$(BIN)/python scripts/gallery.py

lint: setup
	$(BIN)/ruff check ganforge tests benchmarks scripts
