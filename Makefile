# Two entry points for a fresh machine: `make run` and `make test`.
# Both create the virtual environment, install the project (editable, with the
# C extension built in place) and then do their job.

PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := test,gui,pam

FUZZ_TARGETS ?= frames codec dispatch
FUZZ_SECONDS ?= 300

.PHONY: run test install lint bench fuzz clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip setuptools wheel
	$(VPY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# The extension is rebuilt whenever its source changes (the editable install
# only builds it once).
install: $(STAMP)
	$(VPY) setup.py --quiet build_ext --inplace

run: install
	$(VPY) -m nicos_daemon.main --config etc/demo.toml

test: install
	QT_QPA_PLATFORM=offscreen $(VPY) -m pytest -q test

lint: install
	$(VPY) -m ruff check .

# Prints the tables and updates docs/performance.md. The daemon benchmark starts the
# upstream NICOS daemon too (its venv is built on first use, see bench/daemon_bench.py).
bench: install
	$(VPY) -m pip install --quiet -e '.[bench]'
	$(VPY) bench/trace_overhead.py --write docs/performance.md
	$(VPY) bench/daemon_bench.py --write docs/performance.md

# Long coverage-guided runs (atheris), FUZZ_SECONDS per target; not part of `make test`,
# which runs the short hypothesis versions. See fuzz/README.md.
fuzz: install
	$(VPY) -m pip install --quiet -e '.[fuzz]'
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p .cache/fuzz/$$target || exit 1; \
		echo "fuzzing $$target for $(FUZZ_SECONDS) s"; \
		$(VPY) fuzz/fuzz_daemon.py $$target -max_total_time=$(FUZZ_SECONDS) \
			-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 \
			-artifact_prefix=.cache/fuzz/$$target- .cache/fuzz/$$target || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info pyctl/*.so
