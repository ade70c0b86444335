# Two entry points for newcomers (see README): `make demo` and `make test`.
# Both create .venv and install mmfs with every extra on first use (pip, ~3 minutes).
PYTHON ?= python3
VENV ?= .venv
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[all,dev]'
	touch $@

.PHONY: install test test-realsize demo lint
install: $(VENV)/.installed

test: install
	$(VENV)/bin/python -m pytest -q --durations=20

# Every documented command on full-size stand-ins of the public weight files (see docs/benchmarks.md for its cost).
test-realsize: install
	$(VENV)/bin/python -m pytest -q -x -m realsize

demo: install
	$(VENV)/bin/mmfs demo

lint: install
	$(VENV)/bin/ruff check mmfs mmfs_cli tests benchmarks
