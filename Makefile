# The two commands of the README. Each one does all set-up itself (scripts/setup.sh), idempotently.
.PHONY: demo test setup lint bench

demo:
	@scripts/setup.sh
	@.venv/bin/python scripts/run_quickstart.py $(if $(IMPRESSIONS),--impressions $(IMPRESSIONS))

# Two pytest-xdist workers: much of the suite waits on JVMs, kernels and streams, so two share this 2-core
# machine well (the whole suite: 1217-1427 s instead of about 2175 s with one). `make test WORKERS=0` runs it in one process.
WORKERS ?= 2

test:
	@scripts/setup.sh --test
	@.venv/bin/python -m pytest -n $(WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

setup:
	@scripts/setup.sh --test

lint:
	@.venv/bin/ruff check .

bench:
	@for b in bench/*_bench.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
