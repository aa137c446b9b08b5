#!/usr/bin/env bash
# Create .venv with the CPU build of torch and polylm (editable). Safe to re-run.
#   bash scripts/setup.sh          what `polylm` needs to run (about 2 minutes on a fresh machine)
#   bash scripts/setup.sh --dev    also the test tools and peers (transformers, lm-eval, llama-cpp-python, which
#                                  compiles for about 7 minutes, the openai client, Chromium for the chat page test)
# GPU machines: install the CUDA build of torch 2.13.0 into .venv first (docs/install.md), then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=false
case "${1:-}" in
    --dev) dev=true ;;
    "") ;;
    *) echo "usage: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip show torch >/dev/null 2>&1 || .venv/bin/python -m pip install -q torch==2.13.0
if ! $dev; then
    .venv/bin/python -m pip install -q -c constraints.txt -e .
    exit 0
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
# The chat page's browser test (tests/test_serve_browser.py) drives Debian's Chromium; it skips when absent.
# Installed only where this runs as root with apt-get (CI here); elsewhere: apt-get install chromium chromium-driver.
if [ -z "${POLYLM_SKIP_BROWSER:-}" ] && ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } ||
            echo "setup.sh: could not install chromium; the browser test will be skipped" >&2
    else
        echo "setup.sh: no chromium-driver; the browser test will be skipped (apt-get install chromium chromium-driver)" >&2
    fi
fi
