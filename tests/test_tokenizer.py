"""The tokenizer behaves like sentencepiece itself (how the released PolyLM was used), on real text in 18 languages."""

from __future__ import annotations

import gzip
import json

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from conftest import EMBEDDED_CORPUS, SHARED_DATA
from polylm.cli import main
from polylm.tokenizer import Tokenizer, TokenizerTrainingConfig, balanced_quotas, fertility, train_tokenizer

LEIPZIG = SHARED_DATA / "corpora" / "leipzig_sentences"
LANGUAGES = ["ar", "de", "en", "es", "fr", "he", "id", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "vi", "zh"]
needs_leipzig = pytest.mark.skipif(
    not LEIPZIG.is_dir(), reason="real 18-language text ../shared/data/corpora/leipzig_sentences is absent"
)


@pytest.fixture(scope="module", params=["identity", "nmt_nfkc"])
def leipzig_tokenizer(request, tmp_path_factory) -> Tokenizer:
    if not LEIPZIG.is_dir():
        pytest.skip("real 18-language text ../shared/data/corpora/leipzig_sentences is absent")
    out = tmp_path_factory.mktemp(f"leipzig-{request.param}")
    inputs = [LEIPZIG / f"{lang}.txt" for lang in LANGUAGES]
    return train_tokenizer(inputs, out, TokenizerTrainingConfig(vocab_size=8000, normalization=request.param))


def _leipzig_lines():
    for lang in LANGUAGES:
        for line in (LEIPZIG / f"{lang}.txt").read_text(encoding="utf-8").splitlines():
            yield lang, line


def _normalized_text(normalizer: spm.SentencePieceNormalizer, line: str) -> str:
    """SentencePiece's normalized form as text: '▁' back to spaces, minus the dummy prefix."""
    return normalizer.normalize(line).replace("▁", " ").removeprefix(" ")


@needs_leipzig
def test_ids_and_decoding_equal_sentencepiece_on_every_line(leipzig_tokenizer):
    reference = spm.SentencePieceProcessor(model_file=str(leipzig_tokenizer.model_file))
    normalizer = spm.SentencePieceNormalizer(model_file=str(leipzig_tokenizer.model_file))
    lines = list(_leipzig_lines())
    assert len(lines) > 17_000 and {lang for lang, _ in lines} == set(LANGUAGES)
    texts = [line for _, line in lines]
    batch = leipzig_tokenizer.encode_batch(texts)
    for (lang, line), batch_ids in zip(lines, batch, strict=True):
        ids = leipzig_tokenizer.encode(line)
        assert ids == reference.encode(line) == batch_ids, (lang, line)
        assert leipzig_tokenizer.decode(ids) == _normalized_text(normalizer, line), (lang, line)


@needs_leipzig
def test_transformers5_llama_tokenizer_difference_is_pinned(leipzig_tokenizer, tmp_path):
    """transformers 5's LlamaTokenizer skips SentencePiece's normalizer; that is its only difference here.

    identity normalization: it disagrees only on lines that start with whitespace (it drops one space).
    nmt_nfkc: it disagrees wherever the normalizer would change the text (no-break spaces, repeated spaces...).
    In both cases, feeding it SentencePiece's normalized text gives back SentencePiece's ids exactly.
    """
    leipzig_tokenizer.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    normalizer = spm.SentencePieceNormalizer(model_file=str(leipzig_tokenizer.model_file))
    normalization = json.loads((leipzig_tokenizer.model_file.parent / "tokenizer_training.json").read_text())
    disagreeing = []
    for lang, line in _leipzig_lines():
        ours = leipzig_tokenizer.encode(line)
        if hf.encode(line, add_special_tokens=False) != ours:
            disagreeing.append((lang, line))
            assert hf.encode(normalizer.normalize(line), add_special_tokens=False) == ours, (lang, line)
    if normalization["config"]["normalization"] == "identity":
        assert disagreeing and all(line[0].isspace() for _, line in disagreeing)
        assert len(disagreeing) < 20
    else:
        assert len(disagreeing) > 1000  # about 8% of lines
        assert all(_normalized_text(normalizer, line) != line for _, line in disagreeing)


def test_special_pieces_and_no_bos(corpus_tokenizer):
    sp = corpus_tokenizer.sp
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert (corpus_tokenizer.unk_id, corpus_tokenizer.bos_id, corpus_tokenizer.eos_id) == (0, 1, 2)
    assert sp.pad_id() == -1
    ids = corpus_tokenizer.encode("Hello")
    assert ids and ids[0] != 1 and ids[-1] != 2


@pytest.mark.parametrize(
    "text",
    ["🦜 Ꙫ 𝔘", "line one\n\nline two\n", "two  spaces\tand tab", " leading space", "price: 12345.67"],
)
def test_identity_round_trip_with_byte_fallback(corpus_tokenizer, text):
    ids = corpus_tokenizer.encode(text)
    assert corpus_tokenizer.decode(ids) == text
    assert corpus_tokenizer.unk_id not in ids


def test_unseen_characters_use_byte_pieces(corpus_tokenizer):
    pieces = [corpus_tokenizer.sp.id_to_piece(i) for i in corpus_tokenizer.encode("🦜")]
    assert pieces[-4:] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    assert corpus_tokenizer.sp.piece_to_id("<0x0A>") in corpus_tokenizer.encode("a\nb")


def test_digits_are_split(corpus_tokenizer):
    pieces = [corpus_tokenizer.sp.id_to_piece(i) for i in corpus_tokenizer.encode("year 2024")]
    assert pieces[-4:] == ["2", "0", "2", "4"]


def test_balanced_quotas():
    assert balanced_quotas([100, 100, 100], 30, alpha=1.0) == [10, 10, 10]
    assert balanced_quotas([900, 100], 1000, alpha=1.0) == [900, 100]
    assert balanced_quotas([900, 100], 1000, alpha=0.0) == [500, 500]
    low_resource = balanced_quotas([900, 100], 1000, alpha=0.3)
    assert sum(low_resource) == 1000 and 100 < low_resource[1] < 500


def test_training_is_balanced_recorded_and_deterministic(tmp_path):
    inputs = sorted(EMBEDDED_CORPUS.glob("*.txt"))
    config = TokenizerTrainingConfig(vocab_size=2000, sampling_alpha=0.0, max_sentences=360)
    first = train_tokenizer(inputs, tmp_path / "a", config)
    second = train_tokenizer(inputs, tmp_path / "b", config)
    assert first.model_file.read_bytes() == second.model_file.read_bytes()
    record = json.loads((tmp_path / "a" / "tokenizer_training.json").read_text())
    assert record["config"]["vocab_size"] == 2000
    assert [entry["sampled"] for entry in record["inputs"]] == [20] * len(inputs)
    assert first.vocab_size == 2000


def test_training_reads_gzip_and_names_bad_utf8_line(tmp_path, capsys):
    good = tmp_path / "en.txt.gz"
    with gzip.open(good, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(f"sentence number {i} about rivers and bridges" for i in range(200)))
    bad = tmp_path / "xx.txt"
    bad.write_bytes(b"fine line\nsecond line\n\xff\xfe broken\n")
    code = main(
        ["tokenizer", "train", "--input", str(good), str(bad), "--vocab-size", "300", "--out", str(tmp_path / "t")]
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == f"polylm: error: {bad}: line 3 is not valid UTF-8 (invalid start byte)"
    assert main(["tokenizer", "train", "--input", str(good), "--vocab-size", "300", "--out", str(tmp_path / "t")]) == 0
    assert Tokenizer.from_dir(tmp_path / "t").vocab_size == 300


def test_training_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(tmp_path / "missing.txt"),
                "--vocab-size",
                "300",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 1
    )
    assert "missing.txt: input file not found" in capsys.readouterr().err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("just a few words\n")
    assert main(["tokenizer", "train", "--input", str(tiny), "--vocab-size", "5000", "--out", str(tmp_path / "t")]) == 1
    assert capsys.readouterr().err.startswith("polylm: error: SentencePiece training failed")


def test_stats_reports_fertility_per_language(corpus_tokenizer, capsys):
    zh, en = EMBEDDED_CORPUS / "zh.txt", EMBEDDED_CORPUS / "en.txt"
    code = main(
        [
            "tokenizer",
            "stats",
            "--tokenizer",
            str(corpus_tokenizer.model_file),
            "--input",
            f"chinese={zh}",
            str(en),
            "--json",
        ]
    )
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"chinese", "en"}
    lines = en.read_text(encoding="utf-8").splitlines()
    assert stats["en"]["tokens"] == sum(len(corpus_tokenizer.encode(line)) for line in lines)
    assert stats["en"]["words"] == sum(len(line.split()) for line in lines)
    assert stats["en"]["tokens_per_word"] == pytest.approx(stats["en"]["tokens"] / stats["en"]["words"])
    # Chinese has no spaces: per-character fertility is the meaningful figure, and it is higher than English's.
    assert stats["chinese"]["tokens_per_char"] > stats["en"]["tokens_per_char"]
    direct = fertility(corpus_tokenizer, zh)
    assert stats["chinese"]["tokens"] == direct.tokens and stats["chinese"]["characters"] == direct.characters
