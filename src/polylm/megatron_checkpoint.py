"""Megatron-LM GPT checkpoints <-> polylm's Hugging Face layout, both ways, for any tensor / pipeline split.

PolyLM was trained with a Megatron-LM fork (tensor parallel 8); its released Hugging Face checkpoints came from a
converter in the official repository. The Megatron layout read and written here (Megatron-LM's legacy
`checkpointing.py`, the one that fork uses):

    DIR/latest_checkpointed_iteration.txt        `release`, or the iteration number
    DIR/release/  or  DIR/iter_0000100/
        mp_rank_TT/model_optim_rng.pt            pipeline parallel 1
        mp_rank_TT_PPP/model_optim_rng.pt        pipeline parallel > 1 (TT tensor rank, PPP pipeline stage)

Each file is a dict: `args` (the training Namespace), `iteration`, `checkpoint_version` (2.0 or 3.0 here) and
`model.language_model` with `embedding` (`word_embeddings.weight`, `position_embeddings.weight`; first stage)
and `encoder` (`transformer` in old files): `layers.N.*` numbered within the stage, `final_layernorm.*` on the
last stage. Per layer, in nn.Linear (out, in) layout like polylm's:

    input_layernorm, post_attention_layernorm       replicated on every tensor rank
    self_attention.query_key_value  (3h/TP, h)      column parallel; rows are per head [heads/TP, 3, head_dim]
    self_attention.dense            (h, h/TP)       row parallel (columns split); bias replicated
    mlp.dense_h_to_4h               (4h/TP, h)      column parallel
    mlp.dense_4h_to_h               (h, 4h/TP)      row parallel; bias replicated

Hugging Face GPT-2 wants the fused QKV as [q | k | v] (then transposed, Conv1D): a reorder of the rows, done here
per head. The word embeddings are padded to a multiple of 128 x TP (`make_vocab_size_divisible_by`); reading
trims them to the tokenizer's size, writing pads them with zeros. The config written has bos 1 and eos 2
(PolyLM's ids; the official converter writes vocab_size - 1 for both, which is why the model card passes
eos_token_id=2).
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import torch

from polylm.config import ModelConfig
from polylm.errors import PolyLMError
from polylm.hf_checkpoint import load_model, save_model
from polylm.model import PolyLM
from polylm.tokenizer import Tokenizer

TRACKER = "latest_checkpointed_iteration.txt"
FILE = "model_optim_rng.pt"
VERSIONS = (2.0, 3.0)
RANK_DIR = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
COLUMN = ("self_attention.query_key_value", "mlp.dense_h_to_4h")
ROW = ("self_attention.dense.weight", "mlp.dense_4h_to_h.weight")
NAMES = {  # Megatron layer key -> polylm parameter name within block N
    "input_layernorm": "ln_1",
    "self_attention.query_key_value": "attn.c_attn",
    "self_attention.dense": "attn.c_proj",
    "post_attention_layernorm": "ln_2",
    "mlp.dense_h_to_4h": "mlp.c_fc",
    "mlp.dense_4h_to_h": "mlp.c_proj",
}


def iteration_dir(path: Path) -> Path:
    """The directory holding the rank folders: `path` itself, or the one its tracker file names."""
    if not path.is_dir():
        raise PolyLMError(f"{path}: Megatron checkpoint directory not found")
    if any(RANK_DIR.match(child.name) for child in path.iterdir()):
        return path
    tracker = path / TRACKER
    if not tracker.is_file():
        raise PolyLMError(f"{path}: neither {TRACKER} nor mp_rank_* folders; is it a Megatron checkpoint?")
    value = tracker.read_text().strip()
    name = "release" if value == "release" else f"iter_{int(value):07d}" if value.isdigit() else None
    if name is None or not (path / name).is_dir():
        raise PolyLMError(f"{tracker}: names {value!r}, but {path / (name or value)} does not exist")
    return path / name


def _load(file: Path) -> dict:
    """A rank file: tensors and the args Namespace only (no arbitrary code runs while unpickling)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PolyLMError(f"{file}: missing") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for damaged or foreign files
        raise PolyLMError(f"{file}: not a loadable Megatron checkpoint ({str(exc).splitlines()[0]})") from None


def _ranks(directory: Path) -> dict[tuple[int, int], Path]:
    """{(tensor rank, pipeline stage): file} of the rank folders found."""
    found = {}
    for child in directory.iterdir():
        match = RANK_DIR.match(child.name)
        if match:
            found[(int(match.group(1)), int(match.group(2) or 0))] = child / FILE
    return found


def _check_split(directory: Path, found: dict, tp: int, pp: int) -> None:
    """Every rank of the TP x PP split is there, and nothing else."""
    missing = [f"mp_rank_{t:02d}" + (f"_{p:03d}" if pp > 1 else "") for t in range(tp) for p in range(pp)
               if (t, p) not in found]  # fmt: skip
    if missing:
        raise PolyLMError(f"{directory}: missing ranks {', '.join(missing)} of a {tp} x {pp} (TP x PP) split")
    extra = sorted(set(found) - {(t, p) for t in range(tp) for p in range(pp)})
    if extra:
        raise PolyLMError(f"{directory}: rank folders {extra} lie outside the {tp} x {pp} (TP x PP) split of its args")


def _get(args: argparse.Namespace, *names: str, default=None):
    for name in names:
        if getattr(args, name, None) is not None:
            return getattr(args, name)
    return default


def _config(args: argparse.Namespace, vocab_size: int, where: Path) -> ModelConfig:
    try:
        hidden, heads = int(args.hidden_size), int(args.num_attention_heads)
        return ModelConfig(
            name=where.name,
            vocab_size=vocab_size,
            max_position_embeddings=int(_get(args, "max_position_embeddings", "seq_length")),
            hidden_size=hidden,
            num_layers=int(args.num_layers),
            num_heads=heads,
            ffn_hidden_size=int(_get(args, "ffn_hidden_size", default=4 * hidden)),
            layer_norm_eps=float(_get(args, "layernorm_epsilon", "norm_epsilon", default=1e-5)),
            init_std=float(_get(args, "init_method_std", default=0.006)),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise PolyLMError(f"{where}: the checkpoint's args lack the model shape ({exc})") from None


def _qkv_to_hf(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Megatron's per-head [heads, 3, head_dim, ...] rows -> [3, heads, head_dim, ...] = [q | k | v]."""
    rest = tensor.shape[1:]
    return tensor.reshape(heads, 3, -1, *rest).transpose(0, 1).reshape(-1, *rest)


def _qkv_to_megatron(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    rest = tensor.shape[1:]
    return tensor.reshape(3, heads, -1, *rest).transpose(0, 1).reshape(-1, *rest)


def read_megatron(path: Path, tokenizer: Path | None = None) -> tuple[PolyLM, Tokenizer | None, int | str]:
    """A polylm model from a Megatron checkpoint (any TP x PP), its tokenizer when given, and the iteration."""
    directory = iteration_dir(path)
    files = _ranks(directory)
    if (0, 0) not in files:
        raise PolyLMError(f"{directory}: no mp_rank_00 folder")
    first = _load(files[(0, 0)])
    args, version, iteration = first.get("args"), first.get("checkpoint_version"), first.get("iteration")
    if not isinstance(args, argparse.Namespace):
        raise PolyLMError(f"{files[(0, 0)]}: no 'args' Namespace; is it a Megatron-LM checkpoint?")
    tp = int(_get(args, "tensor_model_parallel_size", default=1 + max(t for t, _ in files)))
    pp = int(_get(args, "pipeline_model_parallel_size", default=1 + max(p for _, p in files)))
    _check_split(directory, files, tp, pp)
    states = {key: first if key == (0, 0) else _load(file) for key, file in sorted(files.items())}
    for key, state in states.items():
        if (state.get("iteration"), state.get("checkpoint_version")) != (iteration, version):
            raise PolyLMError(
                f"{files[key]}: iteration {state.get('iteration')} / checkpoint_version "
                f"{state.get('checkpoint_version')}, but {files[(0, 0)]} has {iteration} / {version}: ranks of "
                "different saves"
            )
    if version not in VERSIONS:
        raise PolyLMError(f"{files[(0, 0)]}: checkpoint_version {version} is not supported (2.0 or 3.0)")
    tokens = Tokenizer.from_dir(tokenizer) if tokenizer else None

    language = {key: state["model"]["language_model"] for key, state in states.items()}
    embedding = torch.cat([language[(t, 0)]["embedding"]["word_embeddings"]["weight"] for t in range(tp)])
    vocab = tokens.vocab_size if tokens else int(_get(args, "vocab_size", default=embedding.shape[0]))
    if vocab > embedding.shape[0]:
        raise PolyLMError(f"{path}: the tokenizer has {vocab} pieces, the embedding only {embedding.shape[0]} rows")
    config = _config(args, vocab, path)
    if config.num_heads % tp:
        raise PolyLMError(f"{path}: {config.num_heads} heads do not split over tensor parallel size {tp}")
    if config.num_layers % pp:
        raise PolyLMError(f"{path}: {config.num_layers} layers do not split over pipeline parallel size {pp}")
    params: dict[str, torch.Tensor] = {
        "wte.weight": embedding[:vocab],
        "wpe.weight": language[(0, 0)]["embedding"]["position_embeddings"]["weight"],
    }
    per_stage = config.num_layers // pp
    for stage in range(pp):
        encoders = [language[(t, stage)].get("encoder", language[(t, stage)].get("transformer")) for t in range(tp)]
        for local in range(per_stage):
            block = f"h.{stage * per_stage + local}"
            for megatron, ours in NAMES.items():
                for kind in ("weight", "bias"):
                    parts = [encoder[f"layers.{local}.{megatron}.{kind}"] for encoder in encoders]
                    if megatron in COLUMN:
                        tensor = torch.cat(parts)
                        if megatron == "self_attention.query_key_value":
                            tensor = _qkv_to_hf(tensor, config.num_heads)
                    elif f"{megatron}.{kind}" in ROW:
                        tensor = torch.cat(parts, dim=1)
                    else:
                        tensor = parts[0]
                    params[f"{block}.{ours}.{kind}"] = tensor
        if stage == pp - 1:
            for kind in ("weight", "bias"):
                params[f"ln_f.{kind}"] = encoders[0][f"final_layernorm.{kind}"]
    dtype = embedding.dtype
    config = config.replace(dtype=str(dtype).removeprefix("torch."))
    with torch.device("meta"):
        model = PolyLM(config)
    model.to(dtype).to_empty(device="cpu")
    expected = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in expected.items():
            if params[name].shape != param.shape:
                raise PolyLMError(
                    f"{path}: {name} has shape {tuple(params[name].shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(params[name])
    return model.eval(), tokens, iteration


def megatron_to_hf(path: Path, out: Path, tokenizer: Path | None = None) -> Path:
    """`polylm convert --from megatron`: write the checkpoint at `path` as polylm's Hugging Face directory; without
    `tokenizer`, a `tokenizer.model` beside the tracker file (as `--to megatron` leaves it) is used."""
    if tokenizer is None and (path / "tokenizer.model").is_file():
        tokenizer = path
    model, tokens, _ = read_megatron(path, tokenizer)
    return save_model(model, out, tokens)


def hf_to_megatron(model_dir: Path, out: Path, tp: int = 1, pp: int = 1, iteration: int | None = None) -> Path:
    """`polylm convert --to megatron`: the layout PolyLM's Megatron fork loads to continue pretraining
    (`--load OUT`), with `args`, the tracker file, and `release/` (or `iter_N/` with an `iteration`)."""
    if out.exists() and any(out.iterdir()):
        raise PolyLMError(f"{out}: exists and is not empty")
    model = load_model(model_dir)
    config = model.config
    if tp < 1 or pp < 1:
        raise PolyLMError(f"--tp and --pp must be >= 1, got {tp} and {pp}")
    if config.num_heads % tp or config.ffn_size % tp:
        raise PolyLMError(f"{model_dir}: {config.num_heads} heads / FFN {config.ffn_size} do not split over --tp {tp}")
    if config.num_layers % pp:
        raise PolyLMError(f"{model_dir}: {config.num_layers} layers do not split over --pp {pp}")
    divisible = 128 * tp
    padded = -(-config.vocab_size // divisible) * divisible
    params = {name: p.detach() for name, p in model.named_parameters()}
    embedding = torch.zeros(padded, config.hidden_size, dtype=params["wte.weight"].dtype)
    embedding[: config.vocab_size] = params["wte.weight"]
    args = argparse.Namespace(
        num_layers=config.num_layers, hidden_size=config.hidden_size, ffn_hidden_size=config.ffn_size,
        num_attention_heads=config.num_heads, kv_channels=config.head_dim,
        max_position_embeddings=config.max_position_embeddings, seq_length=config.max_position_embeddings,
        padded_vocab_size=padded, vocab_size=config.vocab_size, make_vocab_size_divisible_by=128,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, layernorm_epsilon=config.layer_norm_eps,
        init_method_std=config.init_std, position_embedding_type="learned_absolute", normalization="LayerNorm",
        untie_embeddings_and_output_weights=False, add_bias_linear=True, apply_query_key_layer_scaling=False,
        openai_gelu=False, bias_gelu_fusion=True, tokenizer_type="SentencePieceTokenizer",
        params_dtype=params["wte.weight"].dtype, iteration=iteration or 0, consumed_train_samples=0,
    )  # fmt: skip
    name = "release" if iteration is None else f"iter_{iteration:07d}"
    per_stage = config.num_layers // pp
    for stage in range(pp):
        for rank in range(tp):
            encoder: dict[str, torch.Tensor] = {}
            for local in range(per_stage):
                block = f"h.{stage * per_stage + local}"
                for megatron, ours in NAMES.items():
                    for kind in ("weight", "bias"):
                        tensor = params[f"{block}.{ours}.{kind}"]
                        if megatron in COLUMN:
                            if megatron == "self_attention.query_key_value":
                                tensor = _qkv_to_megatron(tensor, config.num_heads)
                            tensor = tensor.chunk(tp)[rank]
                        elif f"{megatron}.{kind}" in ROW:
                            tensor = tensor.chunk(tp, dim=1)[rank]
                        encoder[f"layers.{local}.{megatron}.{kind}"] = tensor.clone()
            language: dict = {"encoder": encoder}
            if stage == 0:
                language["embedding"] = {
                    "word_embeddings": {"weight": embedding.chunk(tp)[rank].clone()},
                    "position_embeddings": {"weight": params["wpe.weight"].clone()},
                }
            model_state: dict = {"language_model": language}
            if stage == pp - 1:
                encoder["final_layernorm.weight"] = params["ln_f.weight"].clone()
                encoder["final_layernorm.bias"] = params["ln_f.bias"].clone()
                if pp > 1:  # the tied output layer's copy Megatron keeps on the last stage
                    model_state["word_embeddings_for_head"] = {"weight": embedding.chunk(tp)[rank].clone()}
            folder = out / name / (f"mp_rank_{rank:02d}" + (f"_{stage:03d}" if pp > 1 else ""))
            folder.mkdir(parents=True)
            state = {"args": args, "checkpoint_version": 3.0, "iteration": iteration or 0, "model": model_state}
            torch.save(state, folder / FILE)
    (out / TRACKER).write_text("release" if iteration is None else str(iteration))
    if (Path(model_dir) / "tokenizer.model").exists():
        shutil.copy(Path(model_dir) / "tokenizer.model", out / "tokenizer.model")
    return out
