# The README's commands. Each target creates .venv on first use, so on a fresh
# machine `make test` or `make lab` is all a newcomer types.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab trust test unit unit-plain-kernels nbval demo data notebooks bench clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

# Jupyter refuses to start as root unless told to; containers and cloud VMs often run as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: trust                        ## open JupyterLab on the lessons
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/

# JupyterLab hides the stored audio players and widgets of a notebook it does not trust (a fresh
# clone's): sign the lessons as trusted, as JupyterLab would after running them.
trust: $(STAMP)
	$(VENV)/bin/jupyter trust notebooks/*.ipynb

test: unit unit-plain-kernels nbval   ## unit tests (this CPU's float kernels, then plain ones), then every notebook

unit: $(STAMP)
	$(PY) -m pytest tests/ -q --durations=10

# The unit tests again as on another CPU: ATen's plain C++ kernels (no AVX) and one thread add floats up in
# another order, so a result that holds only on this machine's kernels fails here (tools/check_float_kernels.py
# runs every setting, lessons included).
unit-plain-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest tests/ -q

nbval: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/ -q

demo: $(STAMP)                    ## the shipped MusicLM plays eight prompts: clips, spectrograms, a page in data/demo/
	$(PY) -m mlm_lessons demo --out data/demo

data: $(STAMP)                    ## the tiny course dataset in data/synthcaps-tiny/
	$(PY) -m mlm_lessons data --preset tiny --out data/synthcaps-tiny

notebooks: $(STAMP)               ## re-execute every lesson in place, storing outputs
	$(PY) -m mlm_lessons notebooks notebooks/*.ipynb

bench: $(STAMP)                   ## benchmarks: print figures, assert nothing
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
