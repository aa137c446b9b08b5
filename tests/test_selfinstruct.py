"""Self-instruct without a server: ROUGE-L, parser, prompts, filters, seed files, crash repair."""

from __future__ import annotations

import json
import random

import pytest

from polylm.durable import cut_torn_tail
from polylm.errors import PolyLMError
from polylm.selfinstruct.filters import REASONS, TaskFilter
from polylm.selfinstruct.locales import LOCALES, locale
from polylm.selfinstruct.parser import parse_answer
from polylm.selfinstruct.prompts import generation_prompt, translation_prompt
from polylm.selfinstruct.seeds import read_seed_file, user_seeds
from polylm.selfinstruct.similarity import RougeIndex, lcs_length, rouge_l, tokenize
from polylm.selfinstruct.state import Store
from polylm.selfinstruct.task import Task, make_task

NEAR_DUPLICATES = {
    "zh": ("请用三句话介绍一下中国的首都北京。", "请用三句话简单介绍中国的首都北京。"),
    "ja": ("日本の首都について三つの文で説明してください。", "日本の首都について三つの文で簡単に説明してください。"),
    "th": ("อธิบายประวัติศาสตร์ของกรุงเทพมหานครในสามประโยค", "อธิบายประวัติศาสตร์ของกรุงเทพฯ ในสามประโยคสั้น ๆ"),
    "ko": ("한국의 수도에 대해 세 문장으로 설명하세요.", "한국의 수도에 대해 세 문장으로 간단히 설명하세요."),
}


def _lcs_table(a: list, b: list) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal, row[0] = 0, 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def test_bit_parallel_lcs_equals_the_dynamic_programme() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.randint(0, 6) for _ in range(rng.randint(0, 70))]
        b = [rng.randint(0, 6) for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _lcs_table(a, b)


def test_rouge_l_equals_rouge_score_with_the_same_tokens() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

    class Tokens:
        def tokenize(self, text: str) -> list[str]:
            return tokenize(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tokens())
    for a, b in [*NEAR_DUPLICATES.values(), ("Escribe un poema sobre el mar.", "Escribe una canción sobre el mar.")]:
        expected = scorer.score(a, b)["rougeL"].fmeasure
        assert rouge_l(tokenize(a), tokenize(b)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("lang", sorted(NEAR_DUPLICATES))
def test_rouge_l_sees_near_duplicates_in_unspaced_scripts(lang: str) -> None:
    """rouge-score's tokenizer keeps [a-z0-9] only: these pairs score 0 with it and above 0.7 here."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    a, b = NEAR_DUPLICATES[lang]
    assert rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure == 0.0
    assert rouge_l(tokenize(a), tokenize(b)) >= 0.7
    index = RougeIndex()
    index.add(tokenize(a))
    assert index.find_similar(tokenize(b)) is not None


def test_tokens_are_characters_for_unspaced_scripts_and_words_elsewhere() -> None:
    assert tokenize("日本でPythonを学ぶ") == ["日", "本", "で", "python", "を", "学", "ぶ"]
    assert tokenize("¿Cuál es la CAPITAL de España?") == ["cuál", "es", "la", "capital", "de", "españa"]
    assert tokenize("ภาษาไทย") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย"]
    assert tokenize("Ｆｕｌｌ width") == ["full", "width"]


def test_index_agrees_with_brute_force() -> None:
    rng = random.Random(1)
    pool = [[rng.randint(0, 40) for _ in range(rng.randint(1, 15))] for _ in range(800)]
    index = RougeIndex(0.7)
    for doc in pool:
        index.add([str(t) for t in doc])
    for _ in range(120):
        query = list(rng.choice(pool))
        for _ in range(rng.randint(0, 4)):
            query[rng.randrange(len(query))] = rng.randint(0, 60)
        best = max(rouge_l(query, doc) for doc in pool)
        found = index.find_similar([str(t) for t in query])
        assert (found is not None) == (best >= 0.7 - 1e-12)
        if found:
            assert found[1] == pytest.approx(rouge_l(query, pool[found[0]]))


ALPACA_ANSWER = """ Escribe un poema corto sobre el otoño.
4. Input:
<noinput>
4. Output:
Las hojas caen despacio.
###
5. Instruction: Clasifica el siguiente animal.
5. Input:
El delfín
5. Output:
Mamífero.
###
6. Instruction: Traduce la frase al inglés."""


def test_parser_reads_alpaca_blocks_and_drops_a_cut_last_task() -> None:
    parsed = parse_answer(ALPACA_ANSWER, 4, truncated=True)
    assert parsed.tasks == [
        Task("Escribe un poema corto sobre el otoño.", "", "Las hojas caen despacio."),
        Task("Clasifica el siguiente animal.", "El delfín", "Mamífero."),
    ]
    assert parsed.truncated == 1
    assert len(parse_answer(ALPACA_ANSWER, 4).tasks) == 3  # not cut: the last one is kept (and has no output)


def test_parser_tolerates_loose_formats() -> None:
    inline = parse_answer("1. 指示：日本の首都は？ 1. 入力：<noinput> 1. 出力：東京です。", 1)
    assert inline.tasks == [Task("日本の首都は？", "", "東京です。")]
    markdown = parse_answer('**2. Instrucción:** "Resume el texto."\n**2. Entrada:** Hola\n**2. Salida:** Hola.', 2)
    assert markdown.tasks == [Task("Resume el texto.", "Hola", "Hola.")]
    bare = parse_answer("Sure! Here they are:\nInstruction: A b c\nOutput: d\n---\nInstruction: E f g\nOutput: h", 1)
    assert [t.instruction for t in bare.tasks] == ["Sure! Here they are:", "A b c", "E f g"]
    chatter = parse_answer("x y z\n1. Output: w\n###\nThat's all, I hope it helps!", 1)
    assert chatter.tasks == [Task("x y z", "", "w")]
    stub = parse_answer("x y z\n1. Output: Paso uno: 2. Paso dos.\n2.", 1)
    assert stub.tasks == [Task("x y z", "", "Paso uno: 2. Paso dos.")]
    numbers = parse_answer("a b c\n1. Output:\n42.\n###\n2. Instruction: d e f\n2. Output:\nEs:\n7", 1)
    assert [t.output for t in numbers.tasks] == ["42.", "Es:\n7"]


def test_noinput_placeholders_are_removed_wherever_they_land() -> None:
    parsed = parse_answer("Nombra tres ríos <noinput>\n4. Input:\nEspaña\n<noinput>\n4. Output:\n<noinput>", 4)
    assert parsed.tasks == [Task("Nombra tres ríos", "España", "")]
    assert make_task("<noinput>", "<No Input>", "x") == Task("", "", "x")
    assert make_task("a", "(none)", "x").input == ""


def test_parser_does_not_merge_a_task_that_lost_its_instruction_label() -> None:
    text = "a b c\n4. Output: d\n5. Input: orphan\n5. Output: orphan output\n6. Instruction: e f g\n6. Output: h"
    assert [t.instruction for t in parse_answer(text, 4).tasks] == ["a b c", "e f g"]


def test_parser_returns_none_for_answers_without_labels() -> None:
    assert parse_answer("Lo siento, no puedo ayudar con eso.", 4) is None
    assert parse_answer("", 4) is None


@pytest.mark.parametrize("code", sorted(LOCALES))
def test_prompts_round_trip_through_the_parser(code: str) -> None:
    demos = [make_task("Name three rivers", "", "Nile, Amazon, Yangtze."), make_task("Sort", "3 1 2", "1 2 3")]
    prompt = generation_prompt(locale(code), demos, 5)
    assert prompt.endswith("###\n3. Instruction:")
    assert "1. Instruction: Name three rivers\n1. Input:\n<noinput>\n1. Output:\nNile, Amazon, Yangtze.\n###" in prompt
    assert locale(code).intro.format(n=7) in prompt
    assert parse_answer(prompt.split(locale(code).list_header.format(n=7), 1)[1], 1).tasks[:2] == demos
    translation = translation_prompt(locale(code), demos[1])
    assert f"into {locale(code).name}" in translation and translation.endswith("1. Instruction:")


def test_blacklist_is_localized() -> None:
    assert locale("es").blacklisted("Dibuja un mapa de tu barrio.") == "dibuja"
    assert locale("ja").blacklisted("この画像を説明してください。") == "画像"
    assert locale("th").blacklisted("อธิบายแผนที่ของประเทศไทย") == "แผนที่"
    assert locale("ru").blacklisted("Опишите изображения ниже.") == "изображения"
    assert locale("de").blacklisted("Was ist Bildung?") is None  # whole words only, not prefixes
    assert locale("en").blacklisted("Explain the plot twist.") == "plot"


def test_filter_counts_one_reason_per_task() -> None:
    check = TaskFilter(locale("es"))
    check.add(make_task("¿Cuál es la capital de Francia y por qué es famosa?", "", "París."))
    cases = {
        "empty_output": make_task("Escribe un poema sobre el mar.", "", ""),
        "too_short": make_task("Hola.", "", "Hola."),
        "too_long": make_task(" ".join(["palabra"] * 151), "", "Sí."),
        "blacklist": make_task("Describe la imagen de un gato en la ventana.", "", "Un gato gris."),
        "language": make_task("Write a short story about a lonely robot.", "", "Once upon a time..."),
        "duplicate": make_task("¿Cuál es la capital de Francia y por qué es famosa?", "", "Es París."),
        "rouge_l": make_task("¿Cuál es la capital de Francia y por qué es tan famosa?", "", "París."),
        None: make_task("Enumera tres ventajas de aprender un segundo idioma.", "", "Trabajo, viajes, amigos."),
    }
    assert set(cases) == {*REASONS, None}
    for reason, task in cases.items():
        assert check.offer(task) == reason, task
    assert len(check) == 2


def test_filter_length_counts_characters_for_unspaced_languages() -> None:
    assert TaskFilter(locale("ja")).reason(make_task("日本の首都は？", "", "東京です。")) is None
    assert TaskFilter(locale("ja")).reason(make_task("首都？", "", "東京です。")) == "too_short"


def test_seed_files_in_both_formats(tmp_path) -> None:
    alpaca = tmp_path / "es.jsonl"
    rows = [
        {"instruction": '"Nombra tres ríos."', "input": None, "output": "Ebro, Tajo, Duero."},
        {"instruction": "Sin salida", "input": "", "output": ""},
        {"instruction": "Ordena los números.", "output": "1 2 3"},
    ]
    alpaca.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert [t for _, t in read_seed_file(alpaca)] == [
        Task("Nombra tres ríos.", "", "Ebro, Tajo, Duero."),
        Task("Ordena los números.", "", "1 2 3"),
    ]
    assert user_seeds(tmp_path, "es") and user_seeds(tmp_path, "ja") is None
    self_instruct = tmp_path / "seed_tasks.jsonl"
    self_instruct.write_text(
        json.dumps({"id": "seed_task_7", "instruction": "Sort", "instances": [{"input": "3 1", "output": "1 3"}]})
        + "\n"
    )
    assert read_seed_file(self_instruct) == [("seed_task_7", Task("Sort", "3 1", "1 3"))]
    (tmp_path / "bad.jsonl").write_text('{"instruction": "x"}\nnot json\n')
    with pytest.raises(PolyLMError, match=r"bad.jsonl:2: not JSON"):
        read_seed_file(tmp_path / "bad.jsonl")


def test_store_cuts_a_half_written_last_line(tmp_path) -> None:
    store = Store(tmp_path)
    store.append_records("es", [Task("a b c", "", "d"), Task("e f g", "", "h")])
    with store.records_path("es").open("a") as f:
        f.write('{"instruction": "cut by a ki')
    assert store.load_records("es") == [Task("a b c", "", "d"), Task("e f g", "", "h")]
    assert store.records_path("es").read_text().endswith("}\n")
    assert cut_torn_tail(store.records_path("es")) == 0
    store.close()
    Store(tmp_path).close()


def test_unknown_language_is_refused() -> None:
    with pytest.raises(PolyLMError, match=r"unknown language 'xx'.*supported: ar, de, en"):
        locale("xx")
