#!/usr/bin/env bash
# Create .venv with the CPU build of torch, polylm (editable) and the test tools. Safe to re-run.
# GPU machines: install the CUDA build of torch 2.13.0 into .venv first (docs/install.md), then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip show torch >/dev/null 2>&1 || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
