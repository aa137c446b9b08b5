"""int8 and int4 PolyLM for CPU inference: `polylm quantize` writes the directory, `load_model` reads it.

- `format.py`: the directory and tensor layout, the int4 group quantization;
- `rows.py`: int8 rows through fbgemm (shared with the exact greedy shortcut of fp32 models);
- `layers.py`: the quantized modules; `convert.py`: the streaming conversion; `load.py`: loading;
- `quality.py`: held-out perplexity per language and greedy agreement, source against quantized.
"""
