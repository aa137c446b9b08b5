"""Cleaning steps: each drop reason drops what it should and keeps what it should, on real text of every script."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from polylm.data.documents import POLYLM_LANGUAGES, Document, Ledger
from polylm.data.filters import (
    ExactDedup,
    LanguageFilter,
    MinHashDedup,
    NormalizeNFC,
    QualityConfig,
    QualityFilter,
    chars_per_word,
    run_steps,
)
from polylm.errors import PolyLMError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEIPZIG = SHARED_DATA / "corpora" / "leipzig_sentences"
needs_leipzig = pytest.mark.skipif(not LEIPZIG.is_dir(), reason="../shared/data/corpora/leipzig_sentences is absent")

# Short sentences of our own in the three unspaced scripts, so the "kept by every step" test runs without data.
OWN_SENTENCES = {
    "zh": "我们明天去北京看望老朋友。",
    "ja": "今日はとても良い天気ですね。",
    "th": "ฉันชอบกินข้าวผัดกับเพื่อนที่ร้านใกล้บ้าน",
}
VOCABULARY = [
    "river", "stone", "garden", "window", "yellow", "morning", "teacher", "market", "bridge", "silver",
    "winter", "music", "doctor", "island", "forest", "letter", "camera", "button", "pocket", "rabbit",
    "summer", "valley", "engine", "candle", "mirror", "ticket", "planet", "orange", "pencil", "harbor",
    "castle", "jacket", "basket", "dragon", "travel", "shadow", "finger", "meadow", "cotton", "bottle",
    "village", "anchor", "circus", "pillow", "wizard", "lantern", "thunder", "saddle", "rocket", "violin",
    "marble",
]  # fmt: skip


def doc(text: str, lang: str = "en", id: str = "t:1") -> Document:
    return Document(text, lang, "test", id)


def random_text(seed: int, length: int, vocabulary: list[str]) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(vocabulary) for _ in range(length)]


def near_duplicate(units: list[str], positions: tuple[int, ...], replacement: str, joiner: str) -> str:
    changed = list(units)
    for position in positions:
        changed[position] = replacement
    return joiner.join(changed)


ENGLISH = random_text(1, 400, VOCABULARY)
HAN = [chr(0x4E00 + i) for i in range(0, 4000, 7)]
CHINESE = random_text(2, 300, HAN)

QUALITY = QualityFilter
STEPS: dict[str, tuple[Callable[[], object], list[Document], list[Document]]] = {
    # reason: (step factory, documents it must keep, documents it must drop); input is kept + dropped, in order
    "normalize:empty": (NormalizeNFC, [doc(" Cafe\u0301 ")], [doc(" \n\t "), doc("")]),
    "quality:too_short": (
        QUALITY,
        [doc("It rains."), doc("今日は雨が降っています。", "ja")],
        [doc("Hello"), doc("  ok  ")],
    ),
    "quality:too_long": (
        lambda: QualityFilter(QualityConfig(max_chars=40)),
        [doc("This sentence has exactly forty letters.")],
        [doc("This sentence is a little longer than forty characters.")],
    ),
    "quality:dup_lines": (
        QUALITY,
        [doc("The river was calm.\nBirds sang in the trees.\nWe walked to town.\nIt rained.\nThe river was calm.")],
        [doc("Buy our product today.\nBuy our product today.\nBuy our product today.\nBest prices in town.")],
    ),
    "quality:digits": (
        QUALITY,
        [doc("The meeting is on 12 March 2024 at 10:30."), doc("会议定于三月十二日上午10点举行。", "zh")],
        [doc("입력: 2007년 07월 08일 20:47:37", "ko"), doc("1234 5678 9012 3456 7890")],
    ),
    "quality:letters": (QUALITY, [doc("Wow!!! Really?!")], [doc("=== *** +++ --- === !!!"), doc("• • • • • • • •")]),
    "quality:symbols": (
        QUALITY,
        [doc("Wait… what did you say? I could not hear you over the music."), doc("#1 in sales this year.")],
        [doc("#tag #tag2 #tag3 #tag4 nice"), doc("那我……不可能……少基不可能为了她……而不要我……不可能……", "zh")],
    ),
    "quality:word_length": (
        QUALITY,
        [
            doc("Die Donaudampfschifffahrtsgesellschaftskapitänsmütze liegt auf dem Tisch.", "de"),
            doc("Tôi đi học ở Hà Nội.", "vi"),
            doc("ฉันชอบกินข้าวผัดกับเพื่อนที่ร้านใกล้บ้านของฉันมากที่สุดในเมืองนี้ครับ", "th"),  # one long "word"
        ],
        [doc("a b c d e f g h i j k"), doc("Supercalifragilisticexpialidocious antidisestablishmentarianism")],
    ),
    "quality:top_ngram": (
        QUALITY,
        [doc("The cat saw the dog, and the dog saw the cat."), doc("主推千年古茶树有机茶、百年古茶树熟茶等。", "zh")],
        [doc("buy now buy now buy now buy now buy now"), doc("买买买买买买买买买买买买买买", "zh")],
    ),
    "quality:dup_ngram": (
        QUALITY,
        [doc(" ".join(VOCABULARY + VOCABULARY[10:14]))],  # 55 words, a repeated 4-gram only
        [doc(" ".join(VOCABULARY + VOCABULARY[10:18]))],  # 59 words, 16 of them in repeated 5-grams
    ),
    "language:mismatch": (
        LanguageFilter,
        [doc("This sentence is plainly written in English."), doc("Habari ya asubuhi, rafiki yangu.", "sw")],
        [doc("This sentence is plainly written in English.", "de"), doc("这是一个中文句子。", "ja")],
    ),
    "language:low_confidence": (
        lambda: LanguageFilter(min_confidence=0.9),
        [doc("Good morning, how are you today?")],
        [doc("Wow!!! Really?!")],  # detected as English, with probability 0.45
    ),
    "dedup:exact": (
        ExactDedup,
        [doc("The same text, twice."), doc("THE SAME TEXT, TWICE."), doc("Another text.")],
        [doc("The  same text,\ntwice."), doc("The same text, twice.")],
    ),
    "dedup:near": (
        MinHashDedup,
        [
            doc(" ".join(ENGLISH)),
            doc(" ".join(random_text(3, 400, VOCABULARY))),
            doc("".join(CHINESE), "zh"),
            doc("".join(random_text(4, 300, HAN)), "zh"),
        ],
        [
            doc(near_duplicate(ENGLISH, (50, 200, 350), "changed", " ")),
            doc(near_duplicate(CHINESE, (100, 200), "变", ""), "zh"),
        ],
    ),
}


@pytest.mark.parametrize("reason", sorted(STEPS))
def test_every_drop_reason_drops_and_keeps(reason):
    factory, kept, dropped = STEPS[reason]
    ids = [Document(d.text, d.lang, d.source, f"doc:{n}") for n, d in enumerate(kept + dropped)]
    ledger = Ledger()
    out = list(factory()(iter(ids), ledger))
    assert [d.id for d in out] == [f"doc:{n}" for n in range(len(kept))]
    assert ledger.drops == {reason: len(dropped)}


def test_quality_rule_order_names_the_first_failing_rule():
    assert QualityFilter().rule(doc("Hello")) == "too_short"
    assert QualityFilter().rule(doc(" ".join(VOCABULARY + VOCABULARY[10:18]))) == "dup_ngram"


def test_normalize_gives_nfc():
    (out,) = NormalizeNFC()([doc(" Cafe\u0301\n")], Ledger())
    assert out.text == "Café" and unicodedata.is_normalized("NFC", out.text)


def test_unspaced_scripts_by_language_or_by_characters():
    assert chars_per_word(doc("我们明天去北京看望老朋友。", "zh")) == 2
    assert chars_per_word(doc("我们明天去北京看望老朋友。", "en")) == 2  # mislabelled, still Chinese
    assert chars_per_word(doc("ฉันชอบกินข้าวผัด", "xx")) == 5
    assert chars_per_word(doc("한국어는 띄어쓰기를 합니다.", "ko")) is None
    assert chars_per_word(doc("Plain English.", "en")) is None


def test_minhash_shingles_characters_for_cjk_and_korean_words_otherwise():
    step = MinHashDedup(shingle=5)
    assert len(step.shingles(doc("".join(CHINESE[:40]), "zh"))) <= 36
    assert b"river stone garden window yellow" in step.shingles(doc("River, stone; garden window yellow!"))
    korean = step.shingles(doc("한국어는 띄어쓰기를 합니다", "ko"))
    assert "한국어는띄".encode() in korean
    assert step.shingles(doc("Hi!")) == {b"hi"}


def pipeline() -> list:
    return [NormalizeNFC(), QualityFilter(), LanguageFilter(), ExactDedup(), MinHashDedup()]


def test_own_unspaced_sentences_pass_every_step():
    docs = [doc(text, lang, f"own:{lang}") for lang, text in OWN_SENTENCES.items()]
    ledger = Ledger()
    assert [d.id for d in run_steps(docs, pipeline(), ledger)] == [d.id for d in docs]
    assert not ledger.drops


@needs_leipzig
@pytest.mark.parametrize("lang", ["zh", "ja", "th"])
def test_real_unspaced_sentences_pass_every_step(lang):
    lines = (LEIPZIG / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:20]
    docs = [doc(line, lang, f"{lang}:{n}") for n, line in enumerate(lines, start=1)]
    ledger = Ledger()
    assert len(list(run_steps(docs, pipeline(), ledger))) == 20, ledger.drops


def leipzig(lang: str) -> list[Document]:
    ledger = Ledger()
    lines = (LEIPZIG / f"{lang}.txt").read_text(encoding="utf-8").split("\n")
    return list(NormalizeNFC()((doc(line, lang, f"{lang}:{n}") for n, line in enumerate(lines, 1)), ledger))


@needs_leipzig
def test_quality_defaults_keep_97_percent_of_every_leipzig_language():
    rates = {}
    for lang in POLYLM_LANGUAGES:
        docs = leipzig(lang)
        rates[lang] = len(list(QualityFilter()(docs, Ledger()))) / len(docs)
    print("quality keep rate:", {lang: round(rate, 3) for lang, rate in rates.items()})
    assert min(rates.values()) >= 0.97, rates


@needs_leipzig
def test_language_id_agrees_with_leipzig_on_98_percent():
    step, agree, total, rates = LanguageFilter(), 0, 0, {}
    for lang in POLYLM_LANGUAGES:
        docs = leipzig(lang)
        hits = sum(step.detect(d.text)[0] == lang for d in docs)
        rates[lang], agree, total = hits / len(docs), agree + hits, total + len(docs)
    print(f"language ID agreement {agree}/{total} = {agree / total:.4f}:", {k: round(v, 3) for k, v in rates.items()})
    assert total > 17_000
    assert agree / total >= 0.98, rates
    assert min(rates.values()) >= 0.95, rates


def test_language_filter_passes_languages_outside_its_set_unchecked():
    step = LanguageFilter(languages=("en", "de"))
    docs = [doc("Ceci est une phrase en français.", "fr"), doc("Ceci est une phrase en français.", "en")]
    ledger = Ledger()
    assert [d.lang for d in step(docs, ledger)] == ["fr"]
    assert ledger.drops == {"language:mismatch": 1}


def test_language_filter_confidence_threshold_is_inclusive():
    text = "Hotel Central"
    lang, confidence = LanguageFilter().detect(text)
    assert len(list(LanguageFilter(min_confidence=confidence)([doc(text, lang)], Ledger()))) == 1
    assert list(LanguageFilter(min_confidence=min(1.0, confidence + 0.01))([doc(text, lang)], Ledger())) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: QualityConfig(max_digit_ratio=1.5), "max_digit_ratio must be between 0 and 1"),
        (lambda: QualityConfig(top_ngram_max=[0.2, 2.0]), r"top_ngram_max\[1\] must be between 0 and 1"),
        (lambda: QualityConfig(min_chars=10, max_chars=5), "min_ threshold is larger"),
        (lambda: LanguageFilter(min_confidence=2), "min_confidence must be between 0 and 1"),
        (lambda: list(LanguageFilter(languages=("en", "qq"))([doc("Hello there.")], Ledger())), "does not know qq"),
        (lambda: MinHashDedup(threshold=0), "0 < threshold <= 1"),
    ],
)
def test_bad_settings_raise(make, message):
    with pytest.raises(PolyLMError, match=message):
        make()


def test_dedup_state_spans_sources_and_run_steps_is_lazy():
    exact = ExactDedup()
    first = list(exact([doc("Shared sentence across sources.")], Ledger()))
    ledger = Ledger()
    assert first and list(exact([doc("Shared sentence across sources.")], ledger)) == []
    assert ledger.drops == {"dedup:exact": 1}

    pulled = []

    def source() -> Iterator[Document]:
        for n in range(3):
            pulled.append(n)
            yield doc(f"Document number {n} is here.", id=f"s:{n}")

    stream = run_steps(source(), [NormalizeNFC(), QualityFilter(), ExactDedup()], Ledger())
    assert next(stream).id == "s:0" and pulled == [0]
