"""Malformed-input campaign (issue M): malformed lines mixed into a real corpus, through the readers and through
`polylm data prepare`; the goal is 0 crashes, every malformed line counted at its FILE:LINE under the expected
kind, and the good lines' output identical to a clean run.

    python bench/malformed_campaign.py [--malformed 10000] [--languages 18] [--seed 0] [--out result.json]

Corpus: ../shared/data: the Leipzig sentences of --languages languages (a monolingual source each, the files in
turn `.jsonl`, `.jsonl.gz`, `.jsonl.zst`, `.txt`, `.txt.gz`, `.txt.zst`, `.json`; JSON records `{"text", "n"}`),
the English UDHR (`text_mode: paragraph`) and Tatoeba de-en and ja-en pairs as TSV. The clean run reads these;
the dirty run reads copies with --malformed lines inserted at random places, spread over the files by their
size, of the kinds each format can have (KINDS): broken JSON, JSON that is not an object, a missing or mistyped
text field, invalid UTF-8 of many sorts (Latin-1 text, cut multi-byte characters, overlong forms, encoded
surrogates), raw control characters, lone-surrogate escapes, a byte order mark inside, Unicode spaces that are
not JSON's, 5000-digit integers, 100,000 nested brackets, 1-3 MB lines, TSV lines without 2 fields or with an
empty side.

Checked (any failure is listed in the result and makes the exit status 1):
- readers: each file read alone with a ledger that keeps every message: each malformed line named exactly once
  as `FILE:LINE: ...` under its kind and nothing else counted; the documents (pairs) are the clean file's, in
  order, with ids that name the same lines;
- prepare: `polylm data prepare` on the clean and on the dirty config (full pipeline: quality, language ID,
  exact and MinHash dedup, rejects, validation split, a tokenizer trained on the cleaned text): both exit 0;
  data.json of the dirty run counts exactly the malformed lines by kind (its 100 examples name malformed lines);
  everything else in it, the cleaned documents, the rejects, the tokenizer and the shards (tokens, offsets,
  languages, ids) are identical to the clean run's once ids name the clean files' lines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import platform
import random
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "corpora"
LEIPZIG = SHARED / "leipzig_sentences"
MONO_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".txt", ".txt.gz", ".txt.zst", ".json")
TATOEBA_PAIRS = (("deu", "de"), ("jpn", "ja"))
HUGE_LINES_PER = 500
"""One 1-3 MB line per this many malformed ones (20 in 10,000: each crosses the readers' 64 KB chunks many times;
more would only cost memory and disk)."""

Maker = Callable[[random.Random, str], bytes]
"""(rng, a good line's text) -> one malformed line (no `\\n`)."""


def _record(text: str, n: int = 0) -> str:
    return json.dumps({"text": text, "n": n}, ensure_ascii=False)


def _insert(rng: random.Random, line: bytes, junk: bytes) -> bytes:
    at = rng.randrange(len(line) + 1)
    return line[:at] + junk + line[at:]


INVALID_BYTES = (
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xbf",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
)
"""Bytes no UTF-8 text holds wherever they are put: invalid leads, stray continuations, overlong forms, encoded
surrogates, code points past U+10FFFF, and multi-byte characters cut short (followed by a byte < 0x80 or
another lead)."""


def _latin1(rng: random.Random, text: str) -> bytes:
    """The line as a Latin-1 (or cp1252) editor saves it, with at least one byte >= 0x80."""
    return (text + rng.choice([" déjà vu", " Größe", " € 5", " año", " naïve"])).encode(
        rng.choice(["latin-1", "cp1252"]), errors="replace"
    )


def _cut_multibyte(rng: random.Random, text: str) -> bytes:
    """The UTF-8 line with one multi-byte character cut short (its last byte removed)."""
    data = (text + " ü").encode()
    starts = [i for i, byte in enumerate(data) if byte >= 0xC0]
    at = rng.choice(starts)
    length = 2 if data[at] < 0xE0 else 3 if data[at] < 0xF0 else 4
    return data[: at + length - 1] + data[at + length :]


def _json_with_control(rng: random.Random, text: str) -> bytes:
    control = rng.choice(["\x00", "\x01", "\x07", "\t", "\x0b", "\x0c", "\r", "\x1b", "\x1f"])
    at = rng.randrange(len(text) + 1)
    return ('{"text": "' + json.dumps(text[:at])[1:-1] + control + json.dumps(text[at:])[1:-1] + '"}').encode()


JSONL_KINDS: dict[str, tuple[str, Maker]] = {
    "truncated_json": ("malformed_json", lambda rng, t: (r := _record(t))[: rng.randrange(1, len(r) - 1)].encode()),
    "two_objects": ("malformed_json", lambda rng, t: (_record(t) + " " + _record(t)).encode()),
    "not_an_object": ("malformed_json", lambda rng, t: json.dumps(rng.choice([[t], t, 42, None, True, 1.5])).encode()),
    "missing_text": ("missing_field", lambda rng, t: json.dumps({rng.choice(["content", "txt", "Text"]): t}).encode()),
    "text_not_a_string": (
        "missing_field",
        lambda rng, t: json.dumps({"text": rng.choice([7, [t], {"t": t}, True])}).encode(),
    ),
    "text_null_or_nan": ("missing_field", lambda rng, t: rng.choice([b'{"text": null}', b'{"text": NaN}', b"{}"])),
    "invalid_utf8_bytes": ("invalid_utf8", lambda rng, t: _insert(rng, _record(t).encode(), rng.choice(INVALID_BYTES))),
    "latin1_record": ("invalid_utf8", lambda rng, t: _latin1(rng, _record(t))),
    "cut_multibyte": ("invalid_utf8", lambda rng, t: _cut_multibyte(rng, _record(t, 1))),
    "lone_surrogate_escape": (
        "invalid_utf8",
        lambda rng, t: json.dumps({"text": t + rng.choice(["\ud83d", "\udc00"])}).encode(),
    ),
    "raw_control_character": ("malformed_json", _json_with_control),
    "byte_order_mark_inside": ("malformed_json", lambda rng, t: ("\ufeff" + _record(t)).encode()),
    "unicode_spaces_only": (
        "malformed_json",
        lambda rng, t: rng.choice(["\u3000", "\xa0 \xa0", "\u2028", "\x0c"]).encode(),
    ),
    "huge_integer": ("malformed_json", lambda rng, t: f'{{"text": {json.dumps(t)}, "n": {"9" * 5000}}}'.encode()),
    "deep_nesting": ("malformed_json", lambda rng, t: b"[" * 20_000),
    "huge_line": (
        "malformed_json",
        lambda rng, t: b'{"text": "' + t.encode() * (rng.randrange(1 << 20, 3 << 20) // max(1, len(t.encode()))),
    ),
}
"""Kind -> (the ledger's kind, maker), for JSON Lines sources (`text_field: text`)."""

TEXT_KINDS: dict[str, tuple[str, Maker]] = {
    "invalid_utf8_bytes": ("invalid_utf8", lambda rng, t: _insert(rng, t.encode(), rng.choice(INVALID_BYTES))),
    "latin1_line": ("invalid_utf8", _latin1),
    "cut_multibyte": ("invalid_utf8", _cut_multibyte),
    "utf16_line": ("invalid_utf8", lambda rng, t: ("é" + t).encode("utf-16")),
    "huge_line": ("invalid_utf8", lambda rng, t: b"\xff" + b"x" * rng.randrange(1 << 20, 3 << 20)),
}
"""For plain text: only invalid UTF-8 is malformed (any decodable line is a document)."""

TSV_KINDS: dict[str, tuple[str, Maker]] = {
    "no_tab": ("malformed_tsv", lambda rng, t: t.replace("\t", " ").encode()),
    "three_fields": ("malformed_tsv", lambda rng, t: (t + "\t" + t.split("\t")[0]).encode()),
    "empty_source": ("empty_side", lambda rng, t: (rng.choice(["", " ", "\u3000"]) + "\t" + t.split("\t")[1]).encode()),
    "empty_target": ("empty_side", lambda rng, t: (t.split("\t")[0] + "\t" + rng.choice(["", "  "])).encode()),
    "invalid_utf8_bytes": ("invalid_utf8", lambda rng, t: _insert(rng, t.encode(), rng.choice(INVALID_BYTES))),
    "latin1_pair": ("invalid_utf8", _latin1),
}
KINDS = {"jsonl": JSONL_KINDS, "txt": TEXT_KINDS, "tsv": TSV_KINDS}


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _malformed_line(
    rng: random.Random, kinds: dict[str, tuple[str, Maker]], text: str, first: bool, huge_left: list[int]
) -> tuple[str, str, bytes]:
    """(kind, ledger kind, line): a line that is malformed as its kind says (checked, else another is drawn)."""
    while True:
        kind = rng.choice(sorted(kinds))
        if (kind == "huge_line" and huge_left[0] <= 0) or (kind == "byte_order_mark_inside" and first):
            continue  # a BOM on line 1 is dropped: that line would be good
        ledger_kind, make = kinds[kind]
        line = make(rng, text)
        undecodable = ledger_kind == "invalid_utf8" and kind != "lone_surrogate_escape"
        if b"\n" in line or not line.strip() or _utf8(line) == undecodable:
            continue
        huge_left[0] -= kind == "huge_line"
        return kind, ledger_kind, line


@dataclass
class CorpusFile:
    """A clean file and its dirty copy: which dirty lines are malformed, and the clean line of each other one."""

    name: str
    fmt: str
    """jsonl, txt or tsv."""
    clean: Path
    dirty: Path
    malformed: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Dirty line number -> (campaign kind, ledger kind)."""
    clean_line: dict[int, int] = field(default_factory=dict)
    """Dirty line number -> clean line number, for the other lines."""


def _write(path: Path, lines: list[bytes]) -> None:
    import gzip

    import zstandard

    data = b"".join(line + b"\n" for line in lines)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor(level=3).compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_corpus(
    work: Path, languages: list[str], malformed: int, seed: int, lines_per_file: int | None
) -> list[CorpusFile]:
    """Write the clean and dirty files under `work/clean` and `work/dirty` (see the module docstring)."""
    rng = random.Random(seed)
    sources: list[tuple[str, str, str, list[str]]] = []  # (name, fmt, file name, texts: sentences or TSV pairs)
    for number, lang in enumerate(languages):
        texts = [t for t in (LEIPZIG / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
        suffix = MONO_SUFFIXES[number % len(MONO_SUFFIXES)]
        fmt = "txt" if suffix.startswith(".txt") else "jsonl"
        sources.append((f"leipzig-{lang}", fmt, f"leipzig-{lang}{suffix}", texts[:lines_per_file]))
    udhr = (SHARED / "udhr" / "txt" / "eng.txt").read_text(encoding="utf-8").splitlines()
    sources.append(("udhr-en", "txt", "udhr-en.txt.zst", udhr[:lines_per_file]))
    for code, lang in TATOEBA_PAIRS:
        sides = [
            (SHARED / "tatoeba_laser_v1" / f"tatoeba.{code}-eng.{c}").read_text(encoding="utf-8").splitlines()
            for c in (code, "eng")
        ]
        pairs = [f"{a}\t{b}" for a, b in zip(*sides, strict=True)]
        sources.append((f"tatoeba-{lang}", "tsv", f"tatoeba-{lang}-en.tsv.gz", pairs[:lines_per_file]))

    sizes = [len(texts) for *_, texts in sources]
    shares = Counter(rng.choices(range(len(sources)), weights=sizes, k=malformed))
    huge_left = [max(1, malformed // HUGE_LINES_PER)]
    files = []
    for index, (name, fmt, file_name, texts) in enumerate(sources):
        corpus = CorpusFile(name, fmt, work / "clean" / file_name, work / "dirty" / file_name)
        lines = [_record(t, n) if fmt == "jsonl" else t for n, t in enumerate(texts, start=1)]
        _write(corpus.clean, [line.encode() for line in lines])
        slots = sorted(rng.choices(range(len(lines) + 1), k=shares[index]))  # insert before clean line i (0-based)
        dirty: list[bytes] = []
        for clean_index in range(len(lines) + 1):
            while slots and slots[0] == clean_index:
                slots.pop(0)
                text = texts[min(clean_index, len(texts) - 1)]  # a neighbour's text, damaged
                kind, ledger_kind, line = _malformed_line(rng, KINDS[fmt], text, not dirty, huge_left)
                dirty.append(line)
                corpus.malformed[len(dirty)] = (kind, ledger_kind)
            if clean_index < len(lines):
                dirty.append(lines[clean_index].encode())
                corpus.clean_line[len(dirty)] = clean_index + 1
        _write(corpus.dirty, dirty)
        files.append(corpus)
    return files


class _IdMap:
    """Rewrites `DIRTY_FILE:LINE` of a good line, in ids and messages, to the clean file's `CLEAN_FILE:LINE` (and,
    given them, one output directory's path to the other's); a malformed line's stays as it is."""

    def __init__(self, files: list[CorpusFile], dirs: tuple[Path, Path] | None = None) -> None:
        self.files = {str(f.dirty): f for f in files}
        names = "|".join(re.escape(name) for name in sorted(self.files, key=len, reverse=True))
        self.pattern = re.compile(rf"({names}):(\d+)")
        self.dirs = (str(dirs[0]), str(dirs[1])) if dirs else None

    def __call__(self, text: str) -> str:
        def clean(match: re.Match) -> str:
            corpus, line = self.files[match[1]], int(match[2])
            return f"{corpus.clean}:{corpus.clean_line[line]}" if line in corpus.clean_line else match[0]

        text = self.pattern.sub(clean, text)
        return text.replace(self.dirs[1], self.dirs[0]) if self.dirs else text

    def malformed(self, text: str) -> bool:
        """Whether `text` starts with the FILE:LINE of a malformed line."""
        match = self.pattern.match(text)
        return bool(match) and int(match[2]) in self.files[match[1]].malformed


def _read(corpus: CorpusFile, path: Path, ledger) -> list[tuple]:
    from polylm.data.readers import read_documents, read_pairs

    if corpus.fmt == "tsv":
        lang = corpus.name.split("-")[1]
        pairs = read_pairs(corpus.name, ledger, tsv=path, src_lang=lang, tgt_lang="en")
        return [(p.src, p.tgt, p.id) for p in pairs]
    mode = "paragraph" if corpus.name.startswith("udhr") else "line"
    return [(d.text, d.id) for d in read_documents(path, "en", corpus.name, ledger, text_mode=mode)]


def check_readers(files: list[CorpusFile]) -> dict:
    """Each file alone, clean and dirty, with a ledger that keeps every message."""
    from polylm.data.documents import Ledger

    @dataclass
    class Recording(Ledger):
        messages: list[tuple[str, str]] = field(default_factory=list)

        def error(self, kind: str, message: str) -> None:
            super().error(kind, message)
            self.messages.append((kind, message))

    ids = _IdMap(files)
    problems: list[str] = []
    named = counted = documents = 0
    for corpus in files:
        clean_ledger, dirty_ledger = Recording(), Recording()
        clean = _read(corpus, corpus.clean, clean_ledger)
        dirty = _read(corpus, corpus.dirty, dirty_ledger)
        documents += len(dirty)
        if clean_ledger.messages:
            problems.append(f"{corpus.clean}: the clean file has errors: {clean_ledger.messages[:3]}")
        if [(*row[:-1], ids(row[-1])) for row in dirty] != clean:
            problems.append(f"{corpus.dirty}: the documents differ from the clean file's")
        counted += sum(dirty_ledger.errors.values())
        at_line = Counter()
        for kind, message in dirty_ledger.messages:
            match = re.match(rf"{re.escape(str(corpus.dirty))}:(\d+): ", message)
            line = int(match[1]) if match else None
            if line not in corpus.malformed or corpus.malformed[line][1] != kind:
                problems.append(f"unexpected {kind}: {message[:200]}")
            at_line[line] += 1
        named += sum(1 for line in corpus.malformed if at_line[line] == 1)
        problems += [
            f"{corpus.dirty}:{line}: {kind} named {at_line[line]} times"
            for line, (kind, _) in corpus.malformed.items()
            if at_line[line] != 1
        ]
    return {"documents": documents, "counted": counted, "named_once_at_file_line": named, "problems": problems}


def _config(files: list[CorpusFile], side: str, tokenizer: Path | None, vocab_size: int) -> dict:
    sources = []
    for corpus in files:
        path = str(getattr(corpus, side))
        if corpus.fmt == "tsv":
            lang = corpus.name.split("-")[1]
            sources.append({"name": corpus.name, "parallel": [{"tsv": path, "src_lang": lang, "tgt_lang": "en"}]})
        else:
            lang = "en" if corpus.name.startswith("udhr") else corpus.name.split("-")[1]
            mode = "paragraph" if corpus.name.startswith("udhr") else "line"
            sources.append({"name": corpus.name, "lang": lang, "paths": [path], "text_mode": mode})
    return {
        "sources": sources,
        "pipeline": {
            "quality": {},
            "language_id": True,
            "exact_dedup": True,
            "minhash_threshold": 0.8,
            "rejects": True,
        },
        "tokenizer": {"path": str(tokenizer)} if tokenizer else {"vocab_size": vocab_size},
        "curriculum": {"preset": "polylm", "total_tokens": 400_000, "switch_fraction": 0.5, "seq_len": 256},
        "validation_fraction": 0.03,
    }


def _prepare(
    work: Path, files: list[CorpusFile], side: str, tokenizer: Path | None, vocab_size: int
) -> tuple[int | None, str | None, float]:
    """(exit status or None, traceback of a crash, seconds) of `polylm data prepare` on one side's config."""
    from polylm.cli import main

    config = work / f"{side}.yaml"
    config.write_text(json.dumps(_config(files, side, tokenizer, vocab_size), indent=1))  # JSON is YAML
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")  # small sources are reused by the curriculum, as expected
            status = main(["data", "prepare", "--config", str(config), "--out", str(work / f"out-{side}")])
        return status, None, time.perf_counter() - start
    except Exception:
        return None, traceback.format_exc(), time.perf_counter() - start


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_outputs(clean: Path, dirty: Path, files: list[CorpusFile], expected: Counter) -> dict:
    """What differs between the two prepared directories, ids mapped; and the dirty run's error counts."""
    ids = _IdMap(files, (clean, dirty))
    problems = []
    summaries = [json.loads((out / "data.json").read_text()) for out in (clean, dirty)]
    errors = Counter(summaries[1]["ledger"]["errors"])
    if errors != expected:
        problems.append(f"data.json errors {dict(errors)} != the malformed lines' kinds {dict(expected)}")
    if summaries[0]["ledger"]["errors"]:
        problems.append(f"the clean run has errors: {summaries[0]['ledger']['errors']}")
    problems += [
        f"an error example names no malformed line: {example[:200]}"
        for example in summaries[1]["ledger"]["error_examples"]
        if not ids.malformed(example)
    ]
    for key in ("read", "drops", "kept", "sources", "validation", "fingerprint", "stages", "epochs"):
        if key in ("read", "drops"):
            same = summaries[0]["ledger"][key] == summaries[1]["ledger"][key]
        else:
            same = summaries[0].get(key) == summaries[1].get(key)
        if not same:
            problems.append(f"data.json {key} differs")
    compared = 0
    for path in sorted(p for p in clean.rglob("*") if p.is_file() and p.name != "data.json"):
        twin = dirty / path.relative_to(clean)
        compared += 1
        if not twin.is_file():
            problems.append(f"{twin} is missing")
        elif path.suffix in (".jsonl", ".json"):  # ids (clean/, rejects, shard ids) name lines; paths differ
            if ids(twin.read_text(encoding="utf-8")) != path.read_text(encoding="utf-8"):
                problems.append(f"{twin.relative_to(dirty)} differs (ids mapped)")
        elif _digest(path) != _digest(twin):
            problems.append(f"{twin.relative_to(dirty)} differs")
    extra = {p.relative_to(dirty) for p in dirty.rglob("*") if p.is_file()} - {
        p.relative_to(clean) for p in clean.rglob("*") if p.is_file()
    }
    problems += [f"{path} only in the dirty run" for path in sorted(map(str, extra))]
    return {"errors": dict(errors), "files_compared": compared, "problems": problems}


def campaign(
    work: Path,
    malformed: int = 10_000,
    languages: list[str] | None = None,
    seed: int = 0,
    lines_per_file: int | None = None,
    tokenizer: Path | None = None,
    vocab_size: int = 8000,
) -> dict:
    """Run the whole campaign in `work`; the result's `problems` is empty when every check holds."""
    languages = languages or sorted(p.stem for p in LEIPZIG.glob("??.txt"))
    start = time.perf_counter()
    files = build_corpus(work, languages, malformed, seed, lines_per_file)
    built = time.perf_counter() - start
    kinds = Counter(kind for f in files for kind, _ in f.malformed.values())
    expected = Counter(ledger_kind for f in files for _, ledger_kind in f.malformed.values())
    crashes: list[str] = []
    start = time.perf_counter()
    try:
        readers = check_readers(files)
    except Exception:
        crashes.append(traceback.format_exc())
        readers = {"problems": ["the readers crashed"]}
    read_seconds = time.perf_counter() - start
    runs = {side: _prepare(work, files, side, tokenizer, vocab_size) for side in ("clean", "dirty")}
    prepare_problems = []
    for side, (status, crash, _) in runs.items():
        if crash:
            crashes.append(crash)
        elif status != 0:
            prepare_problems.append(f"polylm data prepare on the {side} corpus exited {status}")
    outputs = {"problems": prepare_problems}
    if not prepare_problems and not crashes:
        outputs = compare_outputs(work / "out-clean", work / "out-dirty", files, expected)
    good = sum(len(f.clean_line) for f in files)
    return {
        "corpus": {
            "files": [
                {
                    "name": f.name,
                    "file": f.dirty.name,
                    "good_lines": len(f.clean_line),
                    "malformed_lines": len(f.malformed),
                }
                for f in files
            ],
            "good_lines": good,
            "malformed_lines": sum(len(f.malformed) for f in files),
            "dirty_megabytes": round(sum(f.dirty.stat().st_size for f in files) / 1e6, 1),
        },
        "malformed_by_kind": dict(sorted(kinds.items())),
        "expected_ledger_errors": dict(sorted(expected.items())),
        "crashes": len(crashes),
        "crash_tracebacks": crashes,
        "readers": readers,
        "prepare": {**outputs, "seconds": {side: round(run[2], 1) for side, run in runs.items()}},
        "seconds": {"build": round(built, 1), "readers": round(read_seconds, 1)},
        "problems": crashes + readers["problems"] + outputs["problems"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--malformed", type=int, default=10_000)
    parser.add_argument("--languages", type=int, default=18, help="how many Leipzig languages (sorted by code)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the corpus and outputs here (default: a temp directory)")
    parser.add_argument(
        "--out", type=Path, help="results JSON (default: bench/results/malformed_campaign_DATE_cpu.json)"
    )
    args = parser.parse_args()
    import tempfile

    from _machine import cpu_model

    languages = sorted(p.stem for p in LEIPZIG.glob("??.txt"))[: args.languages]
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="polylm-campaign-")))
        start = time.perf_counter()
        result = campaign(work, args.malformed, languages, args.seed)
        seconds = time.perf_counter() - start
    readers, corpus = result["readers"], result["corpus"]
    malformed = corpus["malformed_lines"]
    print(
        f"corpus: {corpus['good_lines']:,} good lines + {malformed:,} malformed lines of "
        f"{len(result['malformed_by_kind'])} kinds in {len(corpus['files'])} files ({corpus['dirty_megabytes']} MB)"
    )
    print(f"crashes: {result['crashes']}")
    print(
        f"readers: {readers.get('counted', 0):,} counted, {readers.get('named_once_at_file_line', 0):,} named once "
        f"at FILE:LINE of {malformed:,} malformed; {readers.get('documents', 0):,} good documents"
    )
    prepare = result["prepare"]
    print(
        f"prepare: errors in data.json {sum(prepare.get('errors', {}).values()):,} "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(prepare.get('errors', {}).items()))}); "
        f"{prepare.get('files_compared', 0)} output files compared with the clean run; "
        f"{prepare['seconds']['clean']} s clean, {prepare['seconds']['dirty']} s dirty"
    )
    print(f"problems: {len(result['problems'])}" + "".join(f"\n  {p[:300]}" for p in result["problems"][:20]))
    report = {
        "benchmark": "malformed_campaign",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "command": " ".join(["python bench/malformed_campaign.py", *sys.argv[1:]]),
        "seed": args.seed,
        "languages": languages,
        "wall_seconds": round(seconds, 1),
        **result,
    }
    out = args.out or REPO / "bench" / "results" / f"malformed_campaign_{report['date']}_cpu.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
