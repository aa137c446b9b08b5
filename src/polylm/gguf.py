"""GGUF export: a PolyLM directory as a file llama.cpp runs (and so its server, Ollama and LM Studio).

llama.cpp has no PolyLM architecture, but PolyLM is GPT-2's graph (pre-LN, learned positions, biases, tanh GELU,
tied embeddings), and a GGUF's tokenizer is chosen by `tokenizer.ggml.model` whatever its architecture. So the file
is `general.architecture = gpt2` with a SentencePiece vocabulary: pieces, scores and types from `tokenizer.model`
(`"llama"`, llama.cpp's SentencePiece tokenizer, for BPE models; `"t5"`, its unigram one, which runs the Viterbi
search and the model's normalizer, for unigram models), PolyLM's special ids, `add_bos` as its tokenizer config
says (false), and PolyLM's prompt formats as `tokenizer.chat_template` (the one named by `template`, plus all three
as named templates). There is no `output.weight`: llama.cpp's GPT-2 graph falls back to `token_embd` (tied), so
the 256K-row matrix is written once. An embedding with more rows than the tokenizer has pieces (Megatron pads
the vocabulary) gets `[PADn]` pieces of type UNUSED, as llama.cpp's own converter writes them.

Weights stream from the model directory one tensor at a time. q8_0 and q4_k_m are made by llama.cpp's own
quantizer (`llama_model_quantize` through llama-cpp-python, in a child process: llama.cpp and PyTorch in one
process can crash on their two OpenMP runtimes) from an intermediate file in the source's precision.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from polylm.config import TANH_GELU_NAMES, ModelConfig
from polylm.errors import PolyLMError
from polylm.hf_checkpoint import (
    Scratch,
    read_config,
    stored_tensors,
)
from polylm.model import PolyLM
from polylm.progress import progress_bar
from polylm.quantize.load import is_quantized
from polylm.templates import TEMPLATES, jinja_template
from polylm.tokenizer import TOKENIZER_FILE, Tokenizer

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_k_m")
LLAMA_FTYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_k_m": 15}
"""llama.cpp's `llama_ftype` of each outtype, as `general.file_type`."""
PAD_SCORE = -1000.0


def tensor_name(name: str) -> str:
    """The GGUF (llama.cpp GPT-2) name of a polylm parameter."""
    fixed = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight"}
    if name in fixed:
        return fixed[name]
    if name.startswith("ln_f."):
        return "output_norm." + name.removeprefix("ln_f.")
    _, layer, rest = name.split(".", 2)
    module, kind = rest.rsplit(".", 1)
    blocks = {
        "ln_1": "attn_norm",
        "attn.c_attn": "attn_qkv",
        "attn.c_proj": "attn_output",
        "ln_2": "ffn_norm",
        "mlp.c_fc": "ffn_up",
        "mlp.c_proj": "ffn_down",
    }
    return f"blk.{layer}.{blocks[module]}.{kind}"


def check_exportable(model_dir: Path, config: ModelConfig, out: Path, outtype: str) -> Tokenizer:
    """Refuse, in one line, what llama.cpp could not run or this export could not write; the model's tokenizer."""
    if outtype not in OUTTYPES:
        raise PolyLMError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    if not out.parent.is_dir():
        raise PolyLMError(f"--out {out}: folder {out.parent} does not exist")
    if is_quantized(model_dir):
        raise PolyLMError(f"{model_dir}: export the original model; llama.cpp quantizes it itself (--outtype q8_0)")
    if config.activation not in TANH_GELU_NAMES:
        raise PolyLMError(
            f"{model_dir / 'config.json'}: activation {config.activation!r} is the exact GELU; llama.cpp's GPT-2 graph "
            "computes the tanh approximation, so its outputs would differ"
        )
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise PolyLMError(f"{model_dir}: no {TOKENIZER_FILE}; a GGUF carries the vocabulary")
    tokenizer = Tokenizer.from_dir(model_dir)
    trainer = _proto(tokenizer).trainer_spec
    algorithm = trainer.ModelType.Name(trainer.model_type)
    if algorithm not in ("BPE", "UNIGRAM"):
        raise PolyLMError(
            f"{tokenizer.model_file}: a SentencePiece {algorithm} model; llama.cpp tokenizes BPE and unigram"
        )
    if tokenizer.vocab_size > config.vocab_size:
        raise PolyLMError(
            f"{model_dir / TOKENIZER_FILE}: tokenizer has {tokenizer.vocab_size} pieces but the embedding has only "
            f"{config.vocab_size} rows ({model_dir / 'config.json'} key 'vocab_size')"
        )
    if outtype in ("q8_0", "q4_k_m"):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise PolyLMError(
                f"--outtype {outtype} is made by llama.cpp's quantizer: pip install llama-cpp-python"
            ) from None
    return tokenizer


def _proto(tokenizer: Tokenizer):
    """The SentencePiece model's settings (trainer and normalizer specs), parsed from its file."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.model_file.read_bytes())
    return proto


def vocabulary(tokenizer: Tokenizer, size: int) -> tuple[list[bytes], list[float], list[int]]:
    """(pieces, scores, token types) as llama.cpp's converter writes a SentencePiece vocabulary, padded to `size`."""
    import gguf

    sp = tokenizer.sp
    pieces, scores, types = [], [], []
    for token in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(token).encode("utf-8"))
        scores.append(sp.get_score(token))
        if sp.is_unknown(token):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(token):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(token):
            types.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(token):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    for pad in range(1, size - len(pieces) + 1):
        pieces.append(f"[PAD{pad}]".encode())
        scores.append(PAD_SCORE)
        types.append(gguf.TokenType.UNUSED)
    return pieces, scores, [int(t) for t in types]


def _metadata(writer, config: ModelConfig, tokenizer: Tokenizer, outtype: str, template: str) -> None:
    writer.add_name(config.name)
    writer.add_file_type(LLAMA_FTYPES[outtype])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.ffn_size)
    writer.add_block_count(config.num_layers)
    writer.add_head_count(config.num_heads)
    writer.add_layer_norm_eps(config.layer_norm_eps)

    proto = _proto(tokenizer)
    pieces, scores, types = vocabulary(tokenizer, config.vocab_size)
    if proto.trainer_spec.model_type == proto.trainer_spec.UNIGRAM:
        writer.add_tokenizer_model("t5")  # llama.cpp's UGM: unigram's Viterbi search and the model's normalizer
        if proto.normalizer_spec.precompiled_charsmap:
            writer.add_precompiled_charsmap(proto.normalizer_spec.precompiled_charsmap)
    else:
        writer.add_tokenizer_model("llama")  # llama.cpp's SentencePiece tokenizer: BPE merges by score
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_unk_token_id(tokenizer.unk_id)
    writer.add_add_bos_token(False)  # PolyLM's tokenizer config: add_bos_token false, Megatron encodes without BOS
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    writer.add_remove_extra_whitespaces(proto.normalizer_spec.remove_extra_whitespaces)
    named = [{"name": "default", "template": jinja_template(template)}]
    named += [{"name": name, "template": jinja_template(name)} for name in TEMPLATES]
    writer.add_chat_template(named)


# outtype of the matrices -> (torch dtype written, numpy view of it, raw ggml type for the writer or None)
_MATRIX_TYPES = {
    "f32": (torch.float32, np.float32, None),
    "f16": (torch.float16, np.float16, None),
    "bf16": (torch.bfloat16, np.uint16, "BF16"),
}


def _tensor_type(outtype: str, ndim: int) -> tuple[torch.dtype, type, str | None]:
    """How one tensor is written: matrices in `outtype`, 1-D tensors (norms, biases) in f32 as llama.cpp keeps them."""
    return _MATRIX_TYPES[outtype if ndim == 2 else "f32"]


def write_gguf(
    model_dir: Path, config: ModelConfig, out: Path, outtype: str, template: str, tokenizer: Tokenizer
) -> None:
    """The model as an f32/f16/bf16 GGUF at `out`, streamed one tensor at a time."""
    import gguf

    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in PolyLM(config).named_parameters()}
    writer = gguf.GGUFWriter(str(out), "gpt2")
    _metadata(writer, config, tokenizer, outtype, template)
    order = []
    for tensor in stored_tensors(model_dir, expected):  # headers only: the data is read in the second pass
        torch_type, numpy_type, raw = _tensor_type(outtype, len(tensor.shape))
        size = math.prod(tensor.shape) * torch.empty((), dtype=torch_type).element_size()
        raw_type = gguf.GGMLQuantizationType[raw] if raw else None
        writer.add_tensor_info(tensor_name(tensor.name), tensor.shape, np.dtype(numpy_type), size, raw_dtype=raw_type)
        order.append(tensor.name)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    scratch = Scratch()
    with progress_bar(total=len(order), desc="writing GGUF", unit="tensor", disable=len(order) < 50) as progress:
        for tensor, name in zip(stored_tensors(model_dir, expected), order, strict=True):
            if tensor.name != name:
                raise PolyLMError(f"{tensor.file}: tensor order changed while reading {model_dir}")
            torch_type, numpy_type, _ = _tensor_type(outtype, len(tensor.shape))
            data = tensor.read(tensor.dtype, scratch).to(torch_type)
            if torch_type == torch.bfloat16:
                data = data.view(torch.int16)
            writer.write_tensor_data(data.numpy().view(numpy_type))
            progress.update()
    writer.close()


QUANTIZE_SCRIPT = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = int(sys.argv[4])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def llama_quantize(source: Path, out: Path, outtype: str) -> None:
    """llama.cpp's quantizer on `source`, in a child process (its log is shown only if it fails)."""
    threads = str(torch.get_num_threads())
    command = [sys.executable, "-c", QUANTIZE_SCRIPT, str(source), str(out), str(LLAMA_FTYPES[outtype]), threads]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    if result.returncode != 0:
        log = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise PolyLMError(f"llama.cpp could not quantize {source} to {outtype}: {' | '.join(log)}")


def export_gguf(model_dir: Path, out: Path, outtype: str = "f16", template: str = "multialpaca") -> dict:
    """Write `model_dir` (a Hugging Face PolyLM directory) as the GGUF file `out`; returns a summary."""
    config = read_config(model_dir)
    tokenizer = check_exportable(model_dir, config, out, outtype)
    if template not in TEMPLATES:
        raise PolyLMError(f"unknown template {template!r} (--template); choose one of {', '.join(TEMPLATES)}")
    partial = out.with_name(out.name + ".partial")
    if outtype in ("q8_0", "q4_k_m"):
        intermediate = out.with_name(out.name + ".source.gguf")
        write_gguf(
            model_dir, config, intermediate, "bf16" if config.dtype == "bfloat16" else "f32", template, tokenizer
        )
        try:
            llama_quantize(intermediate, partial, outtype)
        finally:
            intermediate.unlink(missing_ok=True)
    else:
        write_gguf(model_dir, config, partial, outtype, template, tokenizer)
    partial.replace(out)
    return {
        "out": str(out),
        "outtype": outtype,
        "bytes": out.stat().st_size,
        "vocab": config.vocab_size,
        "tokenizer_pieces": tokenizer.vocab_size,
        "chat_template": template,
    }
