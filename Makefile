# Two commands do all set-up: `make lab` (open the lessons) and `make test` (the whole suite).
# A torch you already have is kept: if the python that makes the venv can import torch, the venv
# sees it (--system-site-packages); otherwise $(TORCH) is installed first.
VENV   ?= .venv
PYTHON ?= python3
TORCH  ?= torch>=2.6
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip install --quiet

.PHONY: lab test notebooks sync bench clean

$(PY):
	if $(PYTHON) -c "import torch" 2>/dev/null; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi
	$(PIP) --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) "$(TORCH)"
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/effitrain lab

test: $(VENV)/.installed-dev
	EFFITRAIN_PROFILE=smoke $(PY) -m pytest

# regenerate notebooks/ from lessons/ (the .py files are the sources)
sync: $(VENV)/.installed-dev
	touch lessons/*.py && $(VENV)/bin/jupytext --sync lessons/*.py

bench: $(VENV)/.installed
	$(VENV)/bin/effitrain bench --preset tiny

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
