#!/usr/bin/env bash
# The main job until `polylm demo` exists (issue I): a tokenizer trained on the embedded 18-language corpus,
# a tiny random PolyLM written in the Hugging Face layout, its shape, and a greedy continuation.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quickstart}
corpus=src/polylm/resources/corpus
polylm=.venv/bin/polylm
"$polylm" tokenizer train --input "$corpus"/*.txt --vocab-size 2000 --out "$out/tokenizer"
"$polylm" tokenizer stats --tokenizer "$out/tokenizer" --input "$corpus"/*.txt
"$polylm" init --preset tiny --tokenizer "$out/tokenizer" --out "$out/model" --seed 0
"$polylm" info --model "$out/model"
"$polylm" generate --model "$out/model" --prompt "The river" --max-new-tokens 16 --json
echo "model directory: $out/model (loads in transformers: AutoModelForCausalLM.from_pretrained(\"$out/model\"))"
