# Set-up is two commands: `make demo` and `make test` (each installs what it needs).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: install demo test lint

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $(VENV_STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

install: $(VENV_STAMP) node_modules/.package-lock.json

demo: install
	.venv/bin/assay demo

test: install
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint: install
	.venv/bin/ruff check .
