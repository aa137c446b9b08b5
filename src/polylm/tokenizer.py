"""SentencePiece tokenizer: the released `tokenizer.model`'s behaviour, and training new ones.

The released PolyLM models were used through `sentencepiece` itself (transformers 4.31's slow
LlamaTokenizer delegated to it), so encode/decode here call sentencepiece directly: no BOS/EOS is added.
transformers 5's LlamaTokenizer differs in two documented ways (see docs/tokenizer.md).
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sentencepiece as spm

from polylm.errors import PolyLMError

TOKENIZER_FILE = "tokenizer.model"
SPECIAL_PIECES = {"unk": ("<unk>", 0), "bos": ("<s>", 1), "eos": ("</s>", 2)}


class Tokenizer:
    """A SentencePiece model with PolyLM's conventions: `<unk>`=0, `<s>`=1, `</s>`=2, nothing added on encode."""

    def __init__(self, model_file: str | Path) -> None:
        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise PolyLMError(f"{self.model_file}: SentencePiece tokenizer model not found")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.model_file))
        except (OSError, RuntimeError) as exc:
            raise PolyLMError(f"{self.model_file}: not a SentencePiece model ({exc})") from None

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a model directory holding `tokenizer.model`, or from the `.model` file itself."""
        path = Path(path)
        return cls(path / TOKENIZER_FILE if path.is_dir() else path)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; ids past the last piece (a padded embedding's extra rows) decode to nothing."""
        size = self.sp.get_piece_size()
        return self.sp.decode([i for i in ids if 0 <= i < size])

    def save(self, out_dir: str | Path) -> None:
        """Write `tokenizer.model` plus the transformers files that make `AutoTokenizer` load it."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.model_file.resolve() != (out_dir / TOKENIZER_FILE).resolve():
            shutil.copyfile(self.model_file, out_dir / TOKENIZER_FILE)
        special = {f"{kind}_token": self.sp.id_to_piece(getattr(self.sp, f"{kind}_id")()) for kind in SPECIAL_PIECES}
        tokenizer_config = {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": False,
            "add_eos_token": False,
            "legacy": False,
            "clean_up_tokenization_spaces": False,
            **special,
        }
        (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _lines(path: Path) -> Iterator[str]:
    """Non-empty lines of a text file (`.gz` too), naming the file and line if one is not UTF-8."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        handle = opener(path, "rb")
    except FileNotFoundError:
        raise PolyLMError(f"{path}: input file not found") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise PolyLMError(f"{path}: line {number} is not valid UTF-8 ({exc.reason})") from None
            if line.strip():
                yield line


def balanced_quotas(line_counts: Sequence[int], budget: int, alpha: float) -> list[int]:
    """Sentences to draw from each input: shares ∝ count**alpha (alpha 1 = as is, 0 = equal), summing to `budget`.

    A small language can get more sentences than it has; its lines are then repeated, which is the
    point of balancing: its characters and merges count for more than its raw size.
    """
    weights = [count**alpha if count else 0.0 for count in line_counts]
    total = sum(weights)
    if total == 0:
        return [0] * len(line_counts)
    return [round(budget * weight / total) for weight in weights]


def _sample(path: Path, count: int, quota: int, rng: random.Random) -> list[str]:
    repeats, remainder = divmod(quota, count)
    chosen = set(rng.sample(range(count), remainder))
    return [line for index, line in enumerate(_lines(path)) for _ in range(repeats + (index in chosen))]


@dataclass
class TokenizerTrainingConfig:
    """Options of `polylm tokenizer train`; saved beside the model as `tokenizer_training.json`."""

    vocab_size: int = 256000
    """Pieces in the model, the special and byte pieces included (PolyLM's: 256,000)."""
    model_type: str = field(default="bpe", metadata={"choices": ("bpe", "unigram")})
    """SentencePiece algorithm."""
    max_sentences: int = 2_000_000
    """Total sentences fed to SentencePiece after balancing (fewer if the inputs are smaller)."""
    sampling_alpha: float = 0.3
    """Language balance: each input's share ∝ lines**alpha (1 = proportional, 0 = equal)."""
    character_coverage: float = 0.9995
    """Share of the input's characters that get pieces of their own; the rarest others fall back to bytes."""
    normalization: str = "identity"
    """SentencePiece normalizer. `identity` keeps newlines and spaces, which PolyLM's prompts rely on
    (its Megatron code looks up the `<0x0A>` newline piece); the released rule is UNVERIFIED."""
    split_digits: bool = True
    """Every digit its own piece (--no-split-digits keeps multi-digit pieces)."""
    seed: int = 0
    """Seed of the line sampling."""
    num_threads: int = field(default=2, metadata={"aliases": ("--threads",)})
    """SentencePiece trainer threads."""


def train_tokenizer(inputs: Sequence[str | Path], out_dir: str | Path, config: TokenizerTrainingConfig) -> Tokenizer:
    """Train a byte-fallback SentencePiece model on language-balanced samples of `inputs` (one file per language)."""
    if config.model_type not in ("bpe", "unigram"):
        raise PolyLMError(f"model type {config.model_type!r} is not 'bpe' or 'unigram'")
    paths = [Path(p) for p in inputs]
    counts = [sum(1 for _ in _lines(path)) for path in paths]
    for path, count in zip(paths, counts, strict=True):
        if count == 0:
            raise PolyLMError(f"{path}: no non-empty lines to train on")
    quotas = balanced_quotas(counts, min(sum(counts), config.max_sentences), config.sampling_alpha)
    rng = random.Random(config.seed)
    sentences = [s for path, n, q in zip(paths, counts, quotas, strict=True) for s in _sample(path, n, q, rng)]
    rng.shuffle(sentences)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()  # written by us: a model_prefix would embed this machine's path in the model
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=config.vocab_size,
            model_type=config.model_type,
            character_coverage=config.character_coverage,
            normalization_rule_name=config.normalization,
            remove_extra_whitespaces=config.normalization != "identity",
            allow_whitespace_only_pieces=True,
            byte_fallback=True,
            split_digits=config.split_digits,
            required_chars="0123456789",  # digits get their own pieces even when the corpus has few
            unk_id=SPECIAL_PIECES["unk"][1],
            bos_id=SPECIAL_PIECES["bos"][1],
            eos_id=SPECIAL_PIECES["eos"][1],
            pad_id=-1,
            input_sentence_size=0,
            num_threads=config.num_threads,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise PolyLMError(f"SentencePiece training failed: {exc}") from None
    (out_dir / TOKENIZER_FILE).write_bytes(model.getvalue())
    tokenizer = Tokenizer(out_dir / TOKENIZER_FILE)
    tokenizer.save(out_dir)
    record = {
        "config": asdict(config),
        "inputs": [
            {"path": str(path), "lines": count, "sampled": quota}
            for path, count, quota in zip(paths, counts, quotas, strict=True)
        ],
        "sentencepiece_version": spm.__version__,
    }
    (out_dir / "tokenizer_training.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return tokenizer


@dataclass
class FertilityStats:
    lines: int
    characters: int
    words: int
    tokens: int
    byte_fallback_tokens: int

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / max(self.characters, 1)

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / max(self.words, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_char": self.tokens_per_char, "tokens_per_word": self.tokens_per_word}


def fertility_table(rows: dict[str, FertilityStats]) -> str:
    """`polylm tokenizer stats`'s table: one row per language."""
    lines = [f"{'lang':<6}{'lines':>8}{'chars':>10}{'tokens':>10}{'tok/char':>10}{'tok/word':>10}{'bytes%':>8}"]
    for lang, s in rows.items():
        byte_share = 100 * s.byte_fallback_tokens / max(s.tokens, 1)
        lines.append(f"{lang:<6}{s.lines:>8}{s.characters:>10}{s.tokens:>10}{s.tokens_per_char:>10.3f}"
                     f"{s.tokens_per_word:>10.3f}{byte_share:>8.2f}")  # fmt: skip
    return "\n".join(lines)


def fertility(tokenizer: Tokenizer, path: Path, max_lines: int | None = None) -> FertilityStats:
    """Tokens per character and per whitespace-separated word of one file (one language)."""
    stats = FertilityStats(0, 0, 0, 0, 0)
    byte_ids = {i for i in range(tokenizer.vocab_size) if tokenizer.sp.is_byte(i)}
    for line in _lines(path):
        if max_lines is not None and stats.lines >= max_lines:
            break
        ids = tokenizer.encode(line)
        stats.lines += 1
        stats.characters += len(line)
        stats.words += len(line.split())
        stats.tokens += len(ids)
        stats.byte_fallback_tokens += sum(i in byte_ids for i in ids)
    return stats
