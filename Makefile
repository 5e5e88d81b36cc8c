# The two set-up commands of the README:
#   make demo   create .venv, install nnunet-ctarr (CPU torch), crop the kidneys from the bundled CT
#   make test   run the test suite (`make test-fast` skips the slow end-to-end tests)
#   make lint   ruff
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist workers; each takes whole test files, so a module's fixtures are built once
TEST_WORKERS ?= 2

.PHONY: demo test test-fast lint install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test]" -c constraints-cpu.txt
	$(BIN)/python -m compileall -q nnunet_ctarr   # an editable install is not byte-compiled (0.07 s per command)
	touch $@

demo: install
	$(BIN)/nnUNetv2_ctarr_crop -i examples/data/totalseg_example/example_ct.nii.gz \
		--anatomy_seg examples/data/totalseg_example/example_ct_totalseg_v2.nii.gz \
		-r kidneys -o demo_out --qc

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

lint: install
	$(BIN)/ruff check .
