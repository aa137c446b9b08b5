"""Parallel sentence pairs -> bilingual training documents, in both translation directions.

PolyLM integrates bilingual data into pretraining, but its format is not published (issue
DAMO-NLP-MT/PolyLM#5). Our default renders each pair with PolyLM's own translation prompt, the one its
README demonstrates: "{src}\\nTranslate this sentence from {SRC} to {TGT}.\\n{tgt}" (UNVERIFIED as the
pretraining format; configurable), and puts several pairs in one document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from polylm.data.documents import Document
from polylm.data.readers import Pair
from polylm.errors import PolyLMError

DEFAULT_TEMPLATE = "{src}\nTranslate this sentence from {SRC} to {TGT}.\n{tgt}"
LANGUAGE_NAMES = {
    "zh": "Chinese", "en": "English", "es": "Spanish", "fr": "French", "pt": "Portuguese", "ru": "Russian",
    "de": "German", "it": "Italian", "ar": "Arabic", "ja": "Japanese", "ko": "Korean", "th": "Thai",
    "vi": "Vietnamese", "id": "Indonesian", "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "he": "Hebrew",
}  # fmt: skip


@dataclass
class BilingualConfig:
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])
    """Used in turn, group by group; fields {src} {tgt} {SRC} {TGT} (language names) {src_lang} {tgt_lang}."""
    pairs_per_document: int = 4
    both_directions: bool = True
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        if self.pairs_per_document < 1:
            raise PolyLMError(f"bilingual config: pairs_per_document must be >= 1, got {self.pairs_per_document}")
        for template in self.templates:
            if "{src}" not in template or "{tgt}" not in template:
                raise PolyLMError(f"bilingual config: template {template!r} needs both {{src}} and {{tgt}}")


def _render(template: str, src: str, tgt: str, src_lang: str, tgt_lang: str) -> str:
    names = {"SRC": LANGUAGE_NAMES.get(src_lang, src_lang), "TGT": LANGUAGE_NAMES.get(tgt_lang, tgt_lang)}
    return template.format(src=src, tgt=tgt, src_lang=src_lang, tgt_lang=tgt_lang, **names)


def bilingual_documents(pairs: Iterable[Pair], config: BilingualConfig) -> Iterator[Document]:
    """Group pairs into documents of `pairs_per_document`, each group once per direction.

    A document's language is its non-English side (the curriculum counts bilingual data as non-English).
    """
    group: list[Pair] = []
    number = 0

    def emit() -> Iterator[Document]:
        template = config.templates[number % len(config.templates)]
        directions = [False, True] if config.both_directions else [False]
        for reverse in directions:
            parts = []
            for pair in group:
                src, tgt, src_lang, tgt_lang = pair.src, pair.tgt, pair.src_lang, pair.tgt_lang
                if reverse:
                    src, tgt, src_lang, tgt_lang = tgt, src, tgt_lang, src_lang
                parts.append(_render(template, src, tgt, src_lang, tgt_lang))
            first = group[0]
            lang = first.src_lang if first.src_lang != "en" else first.tgt_lang
            direction = f"{first.tgt_lang}>{first.src_lang}" if reverse else f"{first.src_lang}>{first.tgt_lang}"
            yield Document(config.separator.join(parts), lang, first.source, f"{first.id}+{len(group)}:{direction}")

    for pair in pairs:
        group.append(pair)
        if len(group) == config.pairs_per_document:
            yield from emit()
            group, number = [], number + 1
    if group:
        yield from emit()
