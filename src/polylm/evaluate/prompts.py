"""Prompt words per language, PolyLM's translation prompt and few-shot assembly.

The localized words are lm-evaluation-harness's (its xcopa, xnli, paws-x, tydiqa and xquad task files, as
collected in the project's eval-conventions notes); docs/evaluation.md lists where a word deviates.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from polylm.errors import PolyLMError

# XCOPA connector by the `question` field: (cause, effect).
XCOPA_CONNECTORS = {
    "et": ("sest", "seetõttu"),
    "ht": ("poukisa", "donk sa"),
    "id": ("karena", "maka"),
    "it": ("perché", "quindi"),
    "qu": ("imataq", "chaymi"),
    "sw": ("kwa sababu", "kwa hiyo"),
    "ta": ("காரணமாக", "எனவே"),
    "th": ("เพราะ", "ดังนั้น"),
    "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"),
    "zh": ("因为", "所以"),
}

# XNLI: (question word, entailment, neutral, contradiction); choice = premise + ", Q? LABEL, " + hypothesis.
XNLI_WORDS = {
    "ar": ("صحيح", "نعم", "لذا", "رقم"),
    "bg": ("правилно", "да", "така", "не"),
    "de": ("richtig", "Ja", "Auch", "Nein"),
    "el": ("σωστός", "Ναί", "Έτσι", "όχι"),
    "en": ("right", "Yes", "Also", "No"),
    "es": ("correcto", "Sí", "Asi que", "No"),
    "fr": ("correct", "Oui", "Aussi", "Non"),
    "hi": ("सही", "हाँ", "इसलिए", "नहीं"),
    "ru": ("правильно", "Да", "Так", "Нет"),
    "sw": ("sahihi", "Ndiyo", "Hivyo", "Hapana"),
    "th": ("ถูกต้อง", "ใช่", "ดังนั้น", "ไม่"),
    "tr": ("doğru", "Evet", "Böylece", "Hayır"),
    "ur": ("صحیح", "جی ہاں", "اس لئے", "نہیں"),
    "vi": ("đúng", "Vâng", "Vì vậy", "Không"),
    "zh": ("正确", "是的", "所以", "不是的"),
}

# PAWS-X: (question word, yes, no); choices = [s1 + ", Q? NO, " + s2, s1 + ", Q? YES, " + s2].
PAWSX_WORDS = {
    "de": ("richtig", "Ja", "Nein"),
    "en": ("right", "Yes", "No"),
    "es": ("verdad", "Sí", "No"),
    "fr": ("n'est-ce pas", "Oui", "Non"),
    "ja": ("ですね", "はい", "いいえ"),
    "ko": ("맞죠", "예", "아니요"),
    "zh": ("对吧", "是", "不是"),
}

# Extractive QA: (context, question, answer) labels; prompt "C: {context}\n\nQ: {question}\n\nA:".
QA_WORDS = {
    "ar": ("السياق", "السؤال", "الإجابة"),
    "bn": ("প্রসঙ্গ", "প্রশ্ন", "উত্তর"),
    "de": ("Kontext", "Frage", "Antwort"),
    "el": ("Συμφραζόμενα", "Ερώτηση", "Απάντηση"),
    "en": ("Context", "Question", "Answer"),
    "es": ("Contexto", "Pregunta", "Respuesta"),
    "fi": ("Konteksti", "Kysymys", "Vastaus"),
    "hi": ("प्रसंग", "सवाल", "उत्तर"),
    "id": ("Konteks", "Pertanyaan", "Jawaban"),
    "ko": ("맥락", "질문", "답변"),
    "ro": ("Context", "Întrebare", "Răspuns"),
    "ru": ("Контекст", "Вопрос", "Ответ"),
    "sw": ("Muktadha", "Swali", "Jibu"),
    "te": ("సందర్భం", "ప్రశ్న", "సమాధానం"),
    "th": ("บริบท", "คำถาม", "คำตอบ"),
    "tr": ("Bağlam", "Soru", "Cevap"),
    "vi": ("Bối cảnh", "Câu hỏi", "Trả lời"),
    "zh": ("语境", "问题", "回答"),
}

# English names for PolyLM's translation prompt (its 18 languages).
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "he": "Hebrew",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "th": "Thai",
    "tr": "Turkish",
    "vi": "Vietnamese",
    "zh": "Chinese",
}

FEWSHOT_DELIMITER = "\n\n"


def qa_prompt(lang: str, context: str, question: str) -> str:
    c, q, a = QA_WORDS[lang]
    return f"{c}: {context}\n\n{q}: {question}\n\n{a}:"


def translation_prompt(src_text: str, src: str, tgt: str) -> str:
    """PolyLM's own MT prompt (its README's example)."""
    return f"{src_text}\nTranslate this sentence from {LANGUAGE_NAMES[src]} to {LANGUAGE_NAMES[tgt]}."


T = TypeVar("T")


def fewshot_examples(pool: Sequence[T], k: int, rng: random.Random, exclude: T | None = None) -> list[T]:
    """k examples drawn from `pool` by `rng` (never `exclude`, the item being evaluated)."""
    if k == 0:
        return []
    candidates = [item for item in pool if item is not exclude]
    if len(candidates) < k:
        raise PolyLMError(f"--num-fewshot {k}: only {len(candidates)} examples to draw from")
    return rng.sample(candidates, k)
