"""Machine translation: WMT20 news test sets and FLORES, with PolyLM's prompt.

Prompt `"{src}\nTranslate this sentence from {SRC} to {TGT}."` (PolyLM's README), generation until a newline,
corpus BLEU with the target language's sacrebleu tokenizer and chrF (metrics.py). The "languages" of these tasks
are directions such as `en-zh`; `--languages zh` selects every direction into or out of zh.

- WMT20: `wmt20/<src>-<tgt>/newstest2020.<src>` and `.<tgt>`, line-aligned plain text, or the official SGML
  `newstest2020-<src><tgt>-src.<src>.sgm` and `newstest2020-<src><tgt>-ref.<tgt>.sgm`.
- FLORES: one file per language, `flores/devtest/<code>.devtest` with FLORES-200 codes (`zho_Hans`) or
  FLORES-101 codes (`zho_simpl`); `flores/dev/` gives the few-shot examples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from polylm.errors import PolyLMError
from polylm.evaluate.data import BadRows, first_existing, read_lines
from polylm.evaluate.metrics import translation_scores
from polylm.evaluate.prompts import LANGUAGE_NAMES, translation_prompt
from polylm.evaluate.tasks.base import GenerationDoc, GenerationTask, Split

FLORES_CODES = {
    "ar": ("arb_Arab", "ara"),
    "de": ("deu_Latn", "deu"),
    "en": ("eng_Latn", "eng"),
    "es": ("spa_Latn", "spa"),
    "fr": ("fra_Latn", "fra"),
    "he": ("heb_Hebr", "heb"),
    "id": ("ind_Latn", "ind"),
    "it": ("ita_Latn", "ita"),
    "ja": ("jpn_Jpan", "jpn"),
    "ko": ("kor_Hang", "kor"),
    "nl": ("nld_Latn", "nld"),
    "pl": ("pol_Latn", "pol"),
    "pt": ("por_Latn", "por"),
    "ru": ("rus_Cyrl", "rus"),
    "th": ("tha_Thai", "tha"),
    "tr": ("tur_Latn", "tur"),
    "vi": ("vie_Latn", "vie"),
    "zh": ("zho_Hans", "zho_simpl"),
}
_SEG = re.compile(r"<seg.*?>(.*)</seg>.*?")


def read_segments(path: Path) -> list[str]:
    """Segments of a plain-text file (one per line) or of WMT SGML (`<seg>` lines, cleaned as sacrebleu does)."""
    lines = read_lines(path)
    if path.suffix != ".sgm":
        return lines
    return [" ".join(_SEG.sub(r"\1", line).split()) for line in lines if line.startswith("<seg ")]


def aligned_docs(src_path: Path, ref_path: Path, src: str, tgt: str, bad: BadRows) -> list[GenerationDoc]:
    sources, references = read_segments(src_path), read_segments(ref_path)
    if len(sources) != len(references):
        raise PolyLMError(f"{src_path} has {len(sources)} segments but {ref_path} has {len(references)}")
    docs = []
    for line, (text, reference) in enumerate(zip(sources, references, strict=True), start=1):
        if not text.strip() or not reference.strip():
            bad.add(src_path if not text.strip() else ref_path, line, "empty segment")
            continue
        docs.append(GenerationDoc(translation_prompt(text.strip(), src, tgt), (reference.strip(),)))
    return docs


def directions(languages: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{s}-{t}" for s in languages for t in languages if s != t)


class TranslationTask(GenerationTask):
    max_new_tokens = 256
    target_delimiter = "\n"
    languages = directions(tuple(LANGUAGE_NAMES))

    def select_languages(self, requested: Sequence[str] | None, data_dir: Path) -> list[str]:
        """Named directions as they are; a single language picks the data's directions into or out of it."""
        if requested is None:
            return list(self.available_languages(data_dir))
        chosen: list[str] = []
        for item in requested:
            if item in self.languages:
                chosen.append(item)
            elif item in LANGUAGE_NAMES:
                chosen += [d for d in self.available_languages(data_dir) if item in d.split("-")]
        return list(dict.fromkeys(chosen))

    def score(self, lang: str, predictions: list[str], docs: list[GenerationDoc]) -> tuple[dict, dict]:
        return translation_scores(predictions, [d.references[0] for d in docs], lang.split("-")[1])


class WMT20(TranslationTask):
    name = "wmt20"
    description = "WMT20 news translation, BLEU and chrF"

    def available_languages(self, data_dir: Path) -> tuple[str, ...]:
        """The directions the data directory has."""
        root = data_dir / "wmt20"
        found = tuple(sorted(p.name for p in root.glob("*-*") if p.is_dir() and p.name in self.languages))
        if not found:
            raise PolyLMError(f"{root}: no WMT20 direction folders such as en-zh/ (see docs/evaluation.md)")
        return found

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        src, tgt = lang.split("-")
        folder = data_dir / "wmt20" / lang
        src_path = first_existing(
            [folder / f"newstest2020.{src}", folder / f"newstest2020-{src}{tgt}-src.{src}.sgm"],
            f"WMT20 {lang} source file",
        )
        ref_path = first_existing(
            [folder / f"newstest2020.{tgt}", folder / f"newstest2020-{src}{tgt}-ref.{tgt}.sgm"],
            f"WMT20 {lang} reference file",
        )
        return Split(aligned_docs(src_path, ref_path, src, tgt, bad), sources=[str(src_path), str(ref_path)])


def flores_file(data_dir: Path, lang: str, split: str) -> list[Path]:
    return [data_dir / "flores" / split / f"{code}.{split}" for code in FLORES_CODES[lang]]


class FLORES(TranslationTask):
    name = "flores"
    description = "FLORES devtest translation, BLEU and chrF"

    def available_languages(self, data_dir: Path) -> tuple[str, ...]:
        """English to and from every PolyLM language that has a devtest file."""
        present = [lang for lang in FLORES_CODES if any(p.is_file() for p in flores_file(data_dir, lang, "devtest"))]
        if "en" not in present or len(present) < 2:
            raise PolyLMError(f"{data_dir / 'flores' / 'devtest'}: needs eng_Latn.devtest and one more language")
        return tuple(d for lang in present if lang != "en" for d in (f"en-{lang}", f"{lang}-en"))

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        src, tgt = lang.split("-")
        paths = [
            first_existing(flores_file(data_dir, code, "devtest"), f"FLORES {code} devtest") for code in (src, tgt)
        ]
        split = Split(aligned_docs(*paths, src, tgt, bad), sources=[str(p) for p in paths])
        dev = [next((p for p in flores_file(data_dir, code, "dev") if p.is_file()), None) for code in (src, tgt)]
        if None not in dev:
            split.fewshot_pool = aligned_docs(*dev, src, tgt, bad)
            split.sources += [str(p) for p in dev]
        return split
