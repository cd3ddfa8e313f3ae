# Two commands on a fresh machine (Python 3.11+):
#   make run    install into .venv, then run every notebook (downloads CIFAR-10 unless
#               CIFAR10_DATA_DIR points at a copy); results in runs/latest/summary.json
#   make test   install into .venv, then the tests (the real-data tier too if CIFAR10_DATA_DIR is set)
#   make test-fast  the edit loop (about 3 minutes): units, twins, static notebook checks;
#               no notebook runs, no processes, no real data (pytest -m "not slow and not realdata")
#   make standalone  each English notebook alone in an empty folder and a fresh environment that
#               installs the package from a wheel of this checkout (tools/standalone.py)
#   make site   install requirements-site.txt into .venv, build the web site into _site/html
#               (make site-test: then its browser tests, which need Debian's chromium)
VENV ?= .venv
PY := $(VENV)/bin/python
DOWNLOAD := $(if $(CIFAR10_DATA_DIR),,-p download True)

.PHONY: run test test-fast standalone site site-test
run: $(VENV)/.installed
	$(PY) -m cifar_helpers.run_all $(DOWNLOAD)

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not realdata"

standalone: $(VENV)/.installed
	$(PY) tools/standalone.py

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	touch $@

site: $(VENV)/.site-installed
	$(PY) tools/build_site.py

site-test: site
	$(PY) -m pytest site/tests

$(VENV)/.site-installed: requirements-site.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements-site.txt
	touch $@
