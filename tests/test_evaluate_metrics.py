"""Metrics: BLEU/chrF equal the sacrebleu command line per target language; QA F1 is non-zero and exact for
zh/th (where whitespace tokens make the harness's F1 zero); ROUGE-L keeps Chinese and Cyrillic."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from evaluate_support import BENCHMARKS, needs_benchmarks
from polylm.evaluate.data import BadRows
from polylm.evaluate.metrics import answer_tokens, exact_match, f1, normalize_answer, rouge_l
from polylm.evaluate.tasks.qa import XQuAD
from polylm.evaluate.tasks.translation import WMT20

SACREBLEU = Path(sys.executable).with_name("sacrebleu")


def _hypotheses(references: list[str]) -> list[str]:
    """A fixed, imperfect system output: every 5th word (every 7th character where there are no spaces)
    dropped, and every third line cut short."""
    hypotheses = []
    for i, ref in enumerate(references):
        words = ref.split(" ")
        if len(words) > 3:
            text = " ".join(w for k, w in enumerate(words) if k % 5 != 2)
        else:
            text = "".join(ch for k, ch in enumerate(ref) if k % 7 != 3)
        hypotheses.append(text[: len(text) * 2 // 3] if i % 3 == 0 else text)
    return hypotheses


@needs_benchmarks
@pytest.mark.parametrize("direction", ["en-zh", "en-ja", "en-de"])
def test_wmt20_bleu_equals_sacrebleu_cli(tmp_path, direction):
    task = WMT20()
    docs = task.load(BENCHMARKS, direction, BadRows()).docs[:60]
    references = [doc.references[0] for doc in docs]
    hypotheses = _hypotheses(references)
    scores, signatures = task.score(direction, hypotheses, docs)

    (tmp_path / "ref").write_text("\n".join(references) + "\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    # -l makes the CLI pick its own default tokenizer for the target language: ours must be the same one.
    command = [str(SACREBLEU), str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), "-l", direction]
    cli = json.loads(
        subprocess.run([*command, "-m", "bleu", "chrf", "-w", "6"], capture_output=True, text=True, check=True).stdout
    )
    bleu, chrf = cli
    print(
        f"\n{direction}: ours BLEU {scores['bleu']:.6f} chrF {scores['chrf']:.6f} | sacrebleu CLI BLEU "
        f"{bleu['score']} chrF {chrf['score']} | {signatures['bleu']}"
    )
    assert round(scores["bleu"], 6) == bleu["score"] and round(scores["chrf"], 6) == chrf["score"]
    assert signatures == {"bleu": bleu["signature"], "chrf": chrf["signature"]}
    assert 5 < scores["bleu"] < 95  # a real, partial overlap


def test_bleu_tokenizer_per_target():
    from polylm.evaluate.metrics import bleu_tokenizer

    assert [bleu_tokenizer(t) for t in ("zh", "ja", "ko", "th", "de", "ru", "ar")] == [
        "zh",
        "ja-mecab",
        "ko-mecab",
        "char",
        "13a",
        "13a",
        "13a",
    ]


@needs_benchmarks
def test_xquad_f1_zh_th_hand_computed():
    from lm_eval.tasks.tydiqa.utils import f1_score as harness_f1

    zh_docs = XQuAD().load(BENCHMARKS, "zh", BadRows()).docs
    th_docs = XQuAD().load(BENCHMARKS, "th", BadRows()).docs
    zh = [  # (doc index, gold as in the file, prediction, F1 counted by hand over characters, EM, harness F1)
        (0, "308", "308分。", Fraction(6, 7), 0, 0),  # 。 is punctuation; P 3/4, R 3/3
        (1, "136 次", "136次", Fraction(1), 1, 0),  # spaces do not matter
        (3, "四次", "三次", Fraction(1, 2), 0, 0),  # 次 shared: P 1/2, R 1/2
        (4, "卡万·肖特", "肖特", Fraction(2, 3), 0, 0),  # · is punctuation: gold 卡万肖特; P 2/2, R 2/4
    ]
    th = [
        (0, "308", "308คะแนน", Fraction(6, 11), 0, 0),  # P 3/8, R 3/3
        (4, "คาวันน์ ชอร์ต", "ชอร์ต", Fraction(10, 17), 0, Fraction(2, 3)),  # 5 of 12 characters: P 1, R 5/12
    ]
    for lang, docs, cases in (("zh", zh_docs, zh), ("th", th_docs, th)):
        chosen = [docs[i] for i, *_ in cases]
        assert [d.references[0] for d in chosen] == [gold for _, gold, *_ in cases]
        predictions = [prediction for _, _, prediction, *_ in cases]
        for doc, (_, _, prediction, expected_f1, expected_em, harness) in zip(chosen, cases, strict=True):
            assert f1(prediction, doc.references, lang) == pytest.approx(float(expected_f1), abs=1e-12)
            assert exact_match(prediction, doc.references, lang) == expected_em
            # The harness's whitespace tokens: a clause is one token, so partial answers mostly score 0.
            assert harness_f1(prediction, doc.references[0], lang) == pytest.approx(float(harness))
        scores, _ = XQuAD().score(lang, predictions, chosen)
        mean_f1 = sum(c[3] for c in cases) / len(cases)
        print(f"\nXQuAD {lang}: F1 {scores['f1']:.6f} (by hand {float(mean_f1):.6f}), EM {scores['exact_match']}")
        assert scores["f1"] == pytest.approx(float(mean_f1), abs=1e-12) and scores["f1"] > 0
        assert scores["exact_match"] == pytest.approx(sum(c[4] for c in cases) / len(cases))


def test_answer_normalization():
    assert normalize_answer("The  Eiffel-Tower!", "en") == "eiffeltower"
    assert normalize_answer("An apple, the pear", "en") == "apple pear"
    assert normalize_answer("الكتاب", "ar") == "كتاب"
    assert normalize_answer("«Œuvre» — d'art", "fr") == "œuvre dart"  # Unicode punctuation goes too
    assert answer_tokens("北京，中国", "zh") == ["北", "京", "中", "国"]
    assert answer_tokens("Kota Jakarta.", "id") == ["kota", "jakarta"]
    assert f1("the Jakarta city", ["Jakarta"], "en") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert exact_match("Paris.", ["paris", "Lyon"], "fr") == 1.0


def test_rouge_l_keeps_every_script():
    # rouge-score's default tokenizer keeps [a-z0-9] only: Chinese and Russian score nothing.
    default = rouge_scorer.RougeScorer(["rougeL"])
    assert default.score("北京是中国的首都", "北京是中国首都")["rougeL"].fmeasure == 0.0
    assert default.score("Москва столица России", "Москва столица")["rougeL"].fmeasure == 0.0
    # Ours: zh by character (LCS 6 of 8 and 7 chars), ru by word (2 of 3 and 2), accents kept whole.
    assert rouge_l(["北京是中国首都"], [["北京是中国的首都"]]) == pytest.approx(2 * (7 / 7) * (7 / 8) / (7 / 7 + 7 / 8))
    assert rouge_l(["Москва столица"], [["Москва столица России"]]) == pytest.approx(0.8)
    assert rouge_l(["Die Straße ist schön"], [["die straße ist schön"]]) == 1.0
