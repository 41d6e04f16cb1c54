# The README's two commands: `make demo` (the main job on the embedded corpus) and `make test`.
PY := .venv/bin/python

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

venv: .venv/installed

test: .venv/installed
	$(PY) -m pytest -q tests

.PHONY: venv test
