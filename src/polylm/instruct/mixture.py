"""The instruction mixture config (`polylm instruct prepare --config FILE.yaml`), read into typed sections.

A source is a list of files in one format (`formats.FORMATS`), optionally capped and with a fixed language;
the top level holds the filters (exact dedup, language ID, token length) and the validation split. Relative
paths are relative to the config file. See examples/instruct/*.yaml and docs/instruct.md.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from polylm.configfile import build, check_mapping, read_yaml
from polylm.data.documents import POLYLM_LANGUAGES
from polylm.errors import PolyLMError
from polylm.instruct.formats import FORMATS
from polylm.templates import TEMPLATES

_LANG = re.compile(r"[a-z]{2}")


@dataclass
class PathConfig:
    path: str
    lang: str | None = None
    """Every conversation of this file is in this language (MultiAlpaca's per-language files)."""


@dataclass
class SourceConfig:
    name: str
    format: str
    paths: list[PathConfig]
    """File paths, or mappings {path, lang}."""
    lang: str | None = None
    """Every conversation of the source is in this language (a file's own `lang` wins)."""
    max_records: int | None = None
    """Keep at most this many of the conversations that pass the filters, sampled by a seeded hash of their
    text (so the choice does not depend on file order), e.g. flan_v2: 100000."""


@dataclass
class LengthConfig:
    max_tokens: int | None = None
    """Drop conversations longer than this many tokens (null: no length filter)."""
    tokenizer: str | None = None
    """Tokenizer directory (or .model file) that counts them; required with max_tokens."""
    template: str | None = None
    """Count the tokens `polylm finetune` trains on with this template (polylm.templates: multialpaca, chat;
    `instruct.sft.encode`, `</s>` after each response included); null: the message contents joined by
    newlines, plus one `</s>` per response."""


@dataclass
class MixtureConfig:
    sources: list[SourceConfig]
    dedup: bool = True
    """Exact dedup across all sources (the first copy, in config order, is kept) on the conversation's roles and
    NFC text with whitespace runs collapsed."""
    language_id: bool = True
    """Tag conversations whose language is unknown (no fixed lang, no record lang) by py3langid; else `und`."""
    lid_languages: list[str] = field(default_factory=lambda: list(POLYLM_LANGUAGES))
    """The languages language ID chooses among (PolyLM's 18)."""
    length: LengthConfig = field(default_factory=LengthConfig)
    validation_fraction: float = 0.0
    """Share of kept conversations held out for validation, chosen by a hash of the conversation text (stable
    across runs, file orders and sources)."""
    seed: int = 1234
    """Seed of the max_records sampling."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, where: str = "mixture config") -> None:
        """What the field types do not say (`build` has checked those), naming `where` and the dotted key."""
        if not 0 <= self.validation_fraction < 1:
            raise PolyLMError(f"{where}: validation_fraction: must be in [0, 1), got {self.validation_fraction!r}")
        if not self.lid_languages:
            raise PolyLMError(f"{where}: lid_languages: must be a non-empty list of ISO 639-1 codes")
        for number, lang in enumerate(self.lid_languages):
            _lang(lang, f"{where}: lid_languages[{number}]")
        length = self.length
        if length.template is not None and length.template not in TEMPLATES:
            raise PolyLMError(f"{where}: length.template: {length.template!r} is unknown ({', '.join(TEMPLATES)})")
        if length.max_tokens is not None:
            if length.max_tokens < 1:
                raise PolyLMError(f"{where}: length.max_tokens: must be a positive integer, got {length.max_tokens!r}")
            if not length.tokenizer:
                raise PolyLMError(f"{where}: length.max_tokens: needs length.tokenizer (a tokenizer directory)")


def _lang(value: object, where: str) -> str | None:
    if value is not None and not (isinstance(value, str) and _LANG.fullmatch(value)):
        raise PolyLMError(f"{where}: {value!r} is not an ISO 639-1 code (two lowercase letters)")
    return value


def _source(raw: object, base: Path, file: str, key: str) -> SourceConfig:
    """One source, typed by `build` (a bare string in `paths` stands for {path: ...}), then its own rules."""
    if isinstance(raw, dict) and isinstance(raw.get("paths"), list):
        raw = {**raw, "paths": [{"path": item} if isinstance(item, str) else item for item in raw["paths"]]}
    source = build(SourceConfig, raw, file, key)
    where = f"{file}: {key}"
    if source.format not in FORMATS:
        raise PolyLMError(f"{where}.format: {source.format!r} is unknown; choose one of {', '.join(FORMATS)}")
    if not source.paths:
        raise PolyLMError(f"{where}.paths: must be a non-empty list")
    for number, item in enumerate(source.paths):
        if "\x00" in item.path:
            raise PolyLMError(f"{where}.paths[{number}].path: a path cannot hold a NUL character")
        _lang(item.lang, f"{where}.paths[{number}].lang")
        item.path = str((base / item.path).resolve())
    _lang(source.lang, f"{where}.lang")
    if source.max_records is not None and source.max_records < 1:
        raise PolyLMError(f"{where}.max_records: must be a positive integer or null, got {source.max_records!r}")
    return source


def load_config(path: Path) -> MixtureConfig:
    """Read and check the YAML mixture config (the files themselves are checked when preparing)."""
    path = Path(path)
    raw = read_yaml(path)
    where = str(path)
    values = check_mapping(MixtureConfig, raw if raw is not None else {}, where)
    if not isinstance(values["sources"], list) or not values["sources"]:
        raise PolyLMError(f"{where}: sources: must be a non-empty list")
    base = path.parent
    sources = [_source(item, base, where, f"sources[{n}]") for n, item in enumerate(values.pop("sources"))]
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise PolyLMError(f"{where}: sources: names must be unique, got {names}")
    config = build(MixtureConfig, {**values, "sources": []}, where)
    config.sources = sources
    config.validate(where)
    if config.length.tokenizer:
        config.length.tokenizer = str((base / config.length.tokenizer).resolve())
    return config
