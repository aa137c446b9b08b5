"""Hugging Face model directories: read the released PolyLM layouts, write one transformers loads.

Reads `config.json` (model_type gpt2, GPT2LMHeadModel or PolyLMHeadModel) with weights in any of
`pytorch_model.bin`, `pytorch_model-0000k-of-0000n.bin` + index, `model.safetensors`, or safetensors
shards + index. Shards are read one at a time into a model allocated once, so peak memory stays near
one copy of the weights. Writes safetensors shards + index, `config.json`, `generation_config.json`
and the tokenizer files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from polylm.config import ACTIVATIONS, ModelConfig
from polylm.configfile import read_json
from polylm.errors import PolyLMError
from polylm.inference import INFERENCE_ONLY
from polylm.model import PolyLM, count_parameters
from polylm.progress import progress_bar
from polylm.tokenizer import TOKENIZER_FILE, Tokenizer

SUPPORTED_ARCHITECTURES = ("GPT2LMHeadModel", "PolyLMHeadModel")
# Buffers some converters store (PolyLM's writes the causal mask and -1e4) and the tied output layer.
IGNORED_KEY = re.compile(r"(^|\.)attn\.(bias|masked_bias)$|^lm_head\.weight$")
# HF GPT-2 keeps these in Conv1D layout (in, out); nn.Linear wants (out, in).
CONV1D_KEY = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZED_MODEL_TYPE = "polylm_quantized"
"""`model_type` of a directory written by `polylm quantize`: transformers and earlier polylm refuse it by name."""


def config_from_hf(hf: dict, source: Path) -> ModelConfig:
    """Translate a transformers GPT-2 `config.json` into a ModelConfig, refusing what PolyLM cannot run."""
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise PolyLMError(f"{source}: key 'model_type' is {model_type!r}; only 'gpt2' (PolyLM's layout) is supported")
    architectures = hf.get("architectures") or ["GPT2LMHeadModel"]
    unsupported = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
    if unsupported:
        raise PolyLMError(
            f"{source}: key 'architectures' names {unsupported}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    refused = {
        "scale_attn_by_inverse_layer_idx": True,
        "scale_attn_weights": False,
        "add_cross_attention": True,
        "tie_word_embeddings": False,
    }
    for key, bad_value in refused.items():
        if hf.get(key) is bad_value:
            raise PolyLMError(f"{source}: key {key!r} = {bad_value} is not supported by the PolyLM architecture")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise PolyLMError(
            f"{source}: key 'activation_function' = {activation!r} is not one of {', '.join(ACTIVATIONS)}"
        )
    dtype = hf.get("torch_dtype") or hf.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise PolyLMError(f"{source}: key 'torch_dtype' = {dtype!r} is not one of {', '.join(DTYPES)}")
    eos = hf.get("eos_token_id", 2)
    try:
        return ModelConfig(
            name=hf.get("_name_or_path") or source.parent.name,
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("n_positions", 1024),
            hidden_size=hf.get("n_embd", 768),
            num_layers=hf.get("n_layer", 12),
            num_heads=hf.get("n_head", 12),
            ffn_hidden_size=hf.get("n_inner"),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=activation,
            init_std=hf.get("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id") if hf.get("bos_token_id") is not None else 1,
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            dtype=dtype,
        )
    except KeyError as exc:
        raise PolyLMError(f"{source}: required key {exc.args[0]!r} is missing") from None
    except PolyLMError as exc:
        raise PolyLMError(f"{source}: {exc}") from None


def config_to_hf(config: ModelConfig) -> dict:
    """The transformers `config.json` for `config` (plain GPT2LMHeadModel, no custom code)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": config.activation,
        "vocab_size": config.vocab_size,
        "n_positions": config.max_position_embeddings,
        "n_ctx": config.max_position_embeddings,
        "n_embd": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.ffn_hidden_size,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "torch_dtype": config.dtype,
        "tokenizer_class": "LlamaTokenizer",
    }


def read_hf_config(model_dir: str | Path) -> dict:
    """The raw `config.json` of a model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PolyLMError(f"{model_dir}: model directory not found")
    return read_json(model_dir / "config.json")


def read_config(model_dir: str | Path) -> ModelConfig:
    """The model's shape, from a Hugging Face directory or one written by `polylm quantize`."""
    hf = read_hf_config(model_dir)
    if hf.get("model_type") == QUANTIZED_MODEL_TYPE:
        hf = {**hf, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    return config_from_hf(hf, Path(model_dir) / "config.json")


def model_summary(config: ModelConfig, model_dir: Path | None = None) -> dict:
    """`polylm info`'s facts: shape, exact parameter count (from a meta-device model), the stored dtype, and the
    weights' size (on disk for a quantized directory, whose tensors are smaller than the parameter count says)."""
    from polylm.quantize.load import is_quantized, read_quantization  # it reads configs through this module

    parameters = count_parameters(config)
    dtype, weights = config.dtype, parameters * DTYPES[config.dtype].itemsize
    if model_dir is not None and is_quantized(model_dir):
        bits, group_size = read_quantization(model_dir)
        dtype = f"int{bits}" + (f" (groups of {group_size})" if group_size else "") + ", int8 embedding"
        weights = sum(f.stat().st_size for f in weight_files(model_dir))
    return {"name": config.name, "layers": config.num_layers, "heads": config.num_heads, "hidden": config.hidden_size,
            "ffn": config.ffn_size, "context": config.max_position_embeddings, "vocab": config.vocab_size,
            "parameters": parameters, "dtype": dtype, "weights_gib": round(weights / 1024**3, 3)}  # fmt: skip


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of `model_dir`, from its index if it has one."""
    for index_name in WEIGHT_INDEXES:
        index_path = model_dir / index_name
        if index_path.exists():
            weight_map = read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise PolyLMError(f"{index_path}: key 'weight_map' is missing or empty")
            files = [model_dir / name for name in dict.fromkeys(weight_map.values())]
            for file in files:
                if not file.exists():
                    raise PolyLMError(f"{index_path}: lists shard {file.name} which is not in {model_dir}")
            return files
    for name in WEIGHT_FILES:
        if (model_dir / name).exists():
            return [model_dir / name]
    raise PolyLMError(f"{model_dir}: no weights found (expected one of {', '.join(WEIGHT_FILES + WEIGHT_INDEXES)})")


# safetensors dtype names -> torch dtypes (the ones a GPT-2 checkpoint can hold).
SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "I8": torch.int8,
    "BOOL": torch.bool,
}


Rows = tuple[int, int]


class Scratch:
    """One reusable staging buffer: freeing and re-allocating a temporary per tensor fragments the heap
    (glibc keeps the freed pages), which costs more resident memory than the largest tensor itself."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0, dtype=torch.uint8)

    def get(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if self.buffer.numel() < nbytes:
            self.buffer = torch.empty(nbytes, dtype=torch.uint8)
        return self.buffer[:nbytes].view(dtype).view(shape)


class _SafetensorsEntry:
    """One tensor of a safetensors file, read straight into its destination.

    The safetensors library can only hand back a new tensor; reading into the allocated parameter
    instead keeps peak memory at one copy of the weights (plus one staging buffer for transposes).
    """

    def __init__(self, handle, file: Path, key: str, dtype: torch.dtype, shape: tuple[int, ...], start: int) -> None:
        self.handle, self.file, self.key, self.dtype, self.shape, self.start = handle, file, key, dtype, shape, start

    def copy_to(self, target: torch.Tensor, transpose: bool, scratch: Scratch, rows: Rows | None = None) -> None:
        if transpose:  # polylm's rows are the stored columns: the tensor is read whole, once
            source = self._read(scratch.get(self.shape, self.dtype), 0).t()
            target.copy_(source if rows is None else source[rows[0] : rows[1]])
            return
        first, end = rows or (0, self.shape[0])
        direct = target.dtype == self.dtype and target.device.type == "cpu"
        buffer = target if direct else scratch.get((end - first, *self.shape[1:]), self.dtype)
        self._read(buffer, first * math.prod(self.shape[1:]) * self.dtype.itemsize)
        if not direct:
            target.copy_(buffer)

    def _read(self, buffer: torch.Tensor, offset: int) -> torch.Tensor:
        """`buffer` filled from the tensor's bytes at `offset` on."""
        self.handle.seek(self.start + offset)
        view = buffer.view(-1).view(torch.uint8).numpy() if buffer.numel() else bytearray()
        if self.handle.readinto(view) != len(view):
            raise PolyLMError(f"{self.file}: tensor {self.key!r} is cut short, the file looks corrupt or truncated")
        return buffer


class _TorchEntry:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor, self.shape, self.dtype = tensor, tuple(tensor.shape), tensor.dtype

    def copy_to(self, target: torch.Tensor, transpose: bool, scratch: Scratch, rows: Rows | None = None) -> None:
        source = self.tensor.t() if transpose else self.tensor
        target.copy_(source if rows is None else source[rows[0] : rows[1]])


def _safetensors_entries(file: Path) -> Iterator[tuple[str, _SafetensorsEntry]]:
    size = file.stat().st_size
    with open(file, "rb") as handle:
        try:
            header_size = int.from_bytes(handle.read(8), "little")
            if header_size > size - 8:
                raise ValueError(f"header of {header_size} bytes in a {size}-byte file")
            header = json.loads(handle.read(header_size))
            header.pop("__metadata__", None)
            data_start = 8 + header_size
            entries = []
            for key, info in header.items():
                begin, end = info["data_offsets"]
                if data_start + end > size:
                    raise ValueError(f"tensor {key!r} ends past the end of the file")
                dtype = SAFETENSORS_DTYPES[info["dtype"]]
                entries.append(
                    (key, _SafetensorsEntry(handle, file, key, dtype, tuple(info["shape"]), data_start + begin))
                )
        except (ValueError, KeyError, TypeError) as exc:
            raise PolyLMError(f"{file}: cannot read weights, the file looks corrupt or truncated ({exc})") from None
        yield from entries


def _torch_entries(file: Path) -> Iterator[tuple[str, _TorchEntry]]:
    """A torch.save'd state dict, memory-mapped where the (zip) format allows."""
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)  # pre-zip legacy format
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise PolyLMError(f"{file}: cannot read weights, the file looks corrupt or truncated ({exc})") from None
    if not isinstance(state, dict):
        raise PolyLMError(f"{file}: expected a state dict, found {type(state).__name__}")
    for key, tensor in state.items():
        yield key, _TorchEntry(tensor)


class StoredTensor:
    """One weight of a model directory, named and oriented as polylm's model has it (HF Conv1D transposed)."""

    def __init__(self, file: Path, key: str, entry: _SafetensorsEntry | _TorchEntry) -> None:
        self.file, self.key, self.entry = file, key, entry
        self.name = key.removeprefix("transformer.")
        self.transposed = bool(CONV1D_KEY.search(self.name))
        self.shape = entry.shape[::-1] if self.transposed else entry.shape
        self.dtype = entry.dtype

    @property
    def entry_bytes(self) -> int:
        """Its size as stored."""
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()

    def copy_to(self, target: torch.Tensor, scratch: Scratch, rows: Rows | None = None) -> None:
        """Into `target`: the whole tensor, or only its rows [first, end) (an FSDP shard; dim 0 as polylm has it)."""
        self.entry.copy_to(target, self.transposed, scratch, rows)

    def read(self, dtype: torch.dtype, scratch: Scratch) -> torch.Tensor:
        """A new tensor in `dtype` (the checkpoint's values, converted)."""
        target = torch.empty(self.shape, dtype=dtype)
        self.copy_to(target, scratch)
        return target


def stored_tensors(model_dir: Path, expected: dict[str, tuple[int, ...]]) -> Iterator[StoredTensor]:
    """The weights of `model_dir` one shard at a time, each checked against `expected` (name -> shape).

    Converters' buffers and the tied output layer are skipped; an unexpected, misshapen or missing tensor is a
    PolyLMError naming the file (missing ones once every shard was read).
    """
    seen: set[str] = set()
    unexpected: list[str] = []
    files = weight_files(model_dir)
    with progress_bar(files, desc="reading shards", unit="shard", disable=len(files) < 2) as progress:
        for file in progress:
            entries = _safetensors_entries(file) if file.suffix == ".safetensors" else _torch_entries(file)
            for key, entry in entries:
                if IGNORED_KEY.search(key):
                    continue
                tensor = StoredTensor(file, key, entry)
                if tensor.name not in expected:
                    unexpected.append(f"{key} (in {file.name})")
                    continue
                if tensor.shape != tuple(expected[tensor.name]):
                    want = expected[tensor.name][::-1] if tensor.transposed else expected[tensor.name]
                    raise PolyLMError(
                        f"{file}: tensor {key!r} has shape {entry.shape}, expected {tuple(want)} "
                        f"from {model_dir / 'config.json'}"
                    )
                yield tensor
                seen.add(tensor.name)
    if unexpected:
        raise PolyLMError(f"{model_dir}: unexpected tensors {', '.join(unexpected[:5])}" + _more(unexpected))
    missing = [name for name in expected if name not in seen]
    if missing:
        raise PolyLMError(f"{model_dir}: missing tensors {', '.join(missing[:5])}" + _more(missing))


def check_tokenizer(model_dir: Path, config: ModelConfig) -> None:
    """A tokenizer beside the weights must not have more pieces than the embedding has rows.

    Fewer is fine: Megatron pads the embedding to a multiple of 128 x tensor-parallel size, and the padded rows are
    never produced by the tokenizer (they decode to nothing).
    """
    if (model_dir / TOKENIZER_FILE).exists():
        tokenizer_vocab = Tokenizer.from_dir(model_dir).vocab_size
        if tokenizer_vocab > config.vocab_size:
            raise PolyLMError(
                f"{model_dir / TOKENIZER_FILE}: tokenizer has {tokenizer_vocab} pieces but "
                f"{model_dir / 'config.json'} key 'vocab_size' is only {config.vocab_size}"
            )


def load_model(
    model_dir: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> PolyLM:
    """Load a Hugging Face PolyLM/GPT-2 directory; `dtype` defaults to the config's `torch_dtype`.

    A directory written by `polylm quantize` loads as the quantized model (CPU only).
    """
    model_dir = Path(model_dir)
    if read_hf_config(model_dir).get("model_type") == QUANTIZED_MODEL_TYPE:
        from polylm.quantize.load import load_quantized

        return load_quantized(model_dir, dtype, device)
    config = read_config(model_dir)
    check_tokenizer(model_dir, config)
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else (dtype or DTYPES[config.dtype])
    with torch.device("meta"):
        model = PolyLM(config)
    model.to(torch_dtype).to_empty(device=device)
    parameters = dict(model.named_parameters())
    scratch = Scratch()
    with torch.no_grad():
        for tensor in stored_tensors(model_dir, {name: p.shape for name, p in parameters.items()}):
            tensor.copy_to(parameters[tensor.name], scratch)
    model.config = config.replace(dtype=str(torch_dtype).removeprefix("torch."))
    return model.eval()


def _more(items: list) -> str:
    return f" and {len(items) - 5} more" if len(items) > 5 else ""


def _hf_tensor(name: str, param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tensor = param.detach().t() if CONV1D_KEY.search(name) else param.detach()
    return tensor.to(device="cpu", dtype=dtype).contiguous()


def save_model(
    model: PolyLM,
    out_dir: str | Path,
    tokenizer: Tokenizer | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    dtype: str | None = None,
) -> Path:
    """Write `model` (and `tokenizer`) as a transformers-loadable GPT2LMHeadModel directory.

    Shards are planned from the shapes first, then converted and written one at a time, so saving
    needs at most one shard of extra memory.
    """
    if getattr(model, INFERENCE_ONLY, False):
        raise PolyLMError(
            "this model was prepared for inference (its layers were repacked); save the model it was loaded from"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config.replace(dtype=dtype or str(model.wte.weight.dtype).removeprefix("torch."))
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise PolyLMError(
            f"tokenizer has {tokenizer.vocab_size} pieces but the model's vocab_size is only {config.vocab_size}"
        )
    torch_dtype = DTYPES[config.dtype]
    element_size = torch.empty((), dtype=torch_dtype).element_size()

    plan: list[list[tuple[str, torch.Tensor]]] = [[]]
    shard_bytes = 0
    for name, param in model.named_parameters():
        size = param.numel() * element_size
        if plan[-1] and shard_bytes + size > max_shard_bytes:
            plan.append([])
            shard_bytes = 0
        plan[-1].append((name, param))
        shard_bytes += size

    for stale in out_dir.glob("model*.safetensors*"):
        stale.unlink()
    weight_map: dict[str, str] = {}
    for number, params in enumerate(plan, start=1):
        file_name = "model.safetensors" if len(plan) == 1 else f"model-{number:05d}-of-{len(plan):05d}.safetensors"
        shard = {f"transformer.{name}": _hf_tensor(name, param, torch_dtype) for name, param in params}
        save_file(shard, str(out_dir / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file_name))
        del shard
    if len(plan) > 1:
        total = sum(p.numel() for p in model.parameters()) * element_size
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / WEIGHT_INDEXES[0]).write_text(json.dumps(index, indent=2) + "\n")

    (out_dir / "config.json").write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(out_dir)
    return out_dir
