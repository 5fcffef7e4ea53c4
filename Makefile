SHELL := /bin/bash

PYTHON_BOOT := $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
RUFF := $(VENV)/bin/ruff
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

LINT_DIRS := $(wildcard graphattn modalities tests benchmarks examples docs)

.PHONY: venv lint test docs demo core-demo bench bench-finite bench-compile bench-fused bench-limits examples format clean

venv: $(STAMP)

# Rebuilt only when pyproject.toml or constraints.txt change; a second run is a no-op.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[dev,examples]"
	touch $@

lint: $(STAMP)
	$(RUFF) check $(LINT_DIRS)
	$(RUFF) format --check $(LINT_DIRS)

test: $(STAMP) lint
	$(PY) -m pytest -q

# The docs tools (the [docs] extra), installed beside the test environment by their own stamp.
$(DOCS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[docs]"
	touch $@

# The guides and the API reference, built in strict mode into build/site (about 5 s): a
# warning (broken link, anchor or cross-reference), a public object without a docstring or a
# public module missing from docs/api/ fails the build (docs/_hooks.py). No --quiet: it hides
# the warnings that strict mode counts.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The flagship: audio, images and text in one graph, trained in about 2 minutes on a CPU.
demo: $(STAMP)
	$(PY) -m examples.cross_modal_digits --demo

# The core operator against nn.MultiheadAttention and PyG's TransformerConv (20 s).
core-demo: $(STAMP)
	$(PY) -m examples.core_demo

bench: $(STAMP)
	$(PY) -m benchmarks.bench_core

# What the non-finite and memory checks cost on clean inputs, on bench's cases (~10 min).
bench-finite: $(STAMP)
	$(PY) -m benchmarks.bench_finite

# The fused C++ edge kernel alone against the pure-torch edge path, as multiples of the
# bandwidth bound, at N=100k and 1M, and on small graphs (~8 min; benchmarks/results/fused_cpu.json).
bench-fused: $(STAMP)
	$(PY) -m benchmarks.bench_fused_cpu

# The node-classification example's hot paths on Cora (GCNII's step, its products, sparse
# propagations and dropouts; the hop-distance bias, search and random-walk encoding) against
# the GEMM, copy and random-draw rates measured in the same run (~1 min;
# benchmarks/results/node_limits_cpu.json).
bench-limits: $(STAMP)
	$(PY) -m benchmarks.bench_node_limits

# torch.compile against eager on the dense, edge and GAT paths, and the recompiles of a
# changing graph (~6 min; results in benchmarks/results/compile_cpu.json).
bench-compile: $(STAMP)
	$(PY) -m benchmarks.bench_compile

# Full example runs (minutes each, not in CI); results go to examples/results/*.json.
examples: $(STAMP)
	$(PY) -m examples.vision_hybrid --seeds 5
	$(PY) -m examples.node_classification
	$(PY) -m examples.sentiment --seeds 5
	$(PY) -m examples.char_lm --graph causal
	$(PY) -m examples.char_lm --graph window
	$(PY) -m examples.spoken_digits
	$(PY) -m examples.cross_modal_digits
	$(PY) -m examples.rl_cartpole
	$(PY) -m examples.rl_acrobot
	$(PY) -m examples.why_attention

format: $(STAMP)
	$(RUFF) format $(LINT_DIRS)
	$(RUFF) check --fix $(LINT_DIRS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
