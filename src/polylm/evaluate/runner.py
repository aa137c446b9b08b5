"""`evaluate`: tasks x languages -> requests -> one batched model pass -> scores, with everything recorded.

Order of work: names are checked, then every data file is read (a missing file or a malformed row fails here,
before the model is loaded), then the model answers all log-likelihood requests in one length-sorted pass and
the generation requests task by task, under one progress bar.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polylm.errors import PolyLMError
from polylm.evaluate.config import PREFIX_TOKENS, EvalConfig
from polylm.evaluate.data import BadRows
from polylm.evaluate.instances import Instance, answer_in_order
from polylm.evaluate.language_model import LanguageModel
from polylm.evaluate.prompts import FEWSHOT_DELIMITER, fewshot_examples
from polylm.evaluate.tasks import ChoiceDoc, ChoiceTask, GenerationTask, Task, resolve_tasks
from polylm.generate import GenerationConfig
from polylm.model import count_parameters
from polylm.progress import progress_bar
from polylm.tokenizer import TOKENIZER_FILE, Tokenizer

BAD_ROWS_SHOWN = 10


@dataclass
class Subset:
    """One task in one language, as loaded."""

    task: Task
    lang: str
    docs: list
    fewshot_pool: list
    fewshot_from_docs: bool
    """The pool is the evaluated split itself (no dev split): an item is never its own example."""
    bad: BadRows
    sources: list[str]
    notes: dict[str, object]
    prompts: list = field(default_factory=list)
    """Per doc: its (context, continuation) pairs, or its generation prompt, few-shot examples included."""


def load_subsets(config: EvalConfig) -> list[Subset]:
    """Read every task and language; refuses unknown names, missing files and (unless skipped) bad rows."""
    if config.limit is not None and config.limit < 1:
        raise PolyLMError(f"--limit must be at least 1, got {config.limit}")
    if config.num_fewshot < 0:
        raise PolyLMError(f"--num-fewshot must be 0 or more, got {config.num_fewshot}")
    tasks = resolve_tasks(config.tasks)
    data_dir = Path(config.data_dir)
    if not data_dir.is_dir():
        raise PolyLMError(f"{data_dir}: data directory not found (--data-dir; layout in docs/evaluation.md)")
    chosen = {task.name: task.select_languages(config.languages, data_dir) for task in tasks}
    for task in tasks:
        if not chosen[task.name]:
            raise PolyLMError(
                f"task {task.name!r} has none of --languages {','.join(config.languages or [])} "
                f"(its default languages: {', '.join(task.available_languages(data_dir))})"
            )
    for lang in config.languages or []:
        if not any(task.select_languages([lang], data_dir) for task in tasks):
            raise PolyLMError(f"language {lang!r} in --languages is in none of the tasks {', '.join(chosen)}")
    subsets = []
    for task in tasks:
        for lang in chosen[task.name]:
            bad = BadRows()
            split = task.load(data_dir, lang, bad)
            docs = split.docs[: config.limit] if config.limit else split.docs
            pool = split.fewshot_pool if split.fewshot_pool is not None else split.docs
            subsets.append(Subset(task, lang, docs, pool, split.fewshot_pool is None, bad, split.sources, split.notes))
    _check_bad_rows(subsets, config.skip_bad_rows)
    for s in subsets:
        if not s.docs:
            skipped = f" ({len(s.bad)} malformed rows skipped)" if len(s.bad) else ""
            raise PolyLMError(f"{', '.join(s.sources)}: no {s.task.name} items for {s.lang}{skipped}")
    return subsets


def _check_bad_rows(subsets: list[Subset], skip: bool) -> None:
    counts = {f"{s.task.name} {s.lang}": len(s.bad) for s in subsets if len(s.bad)}
    if not counts or skip:
        return
    first = next(s.bad.messages()[0] for s in subsets if len(s.bad))
    where = ", ".join(f"{name}: {count}" for name, count in counts.items())
    raise PolyLMError(
        f"{first}; {sum(counts.values())} malformed rows in all ({where}). Fix them, or pass --skip-bad-rows to "
        "evaluate without them (they are counted in the output)"
    )


def build_prompts(subsets: list[Subset], num_fewshot: int, seed: int) -> None:
    """Fill each subset's prompts: the few-shot examples, drawn by a fixed seed, go before every item."""
    for subset in subsets:
        rng = random.Random(seed)
        for doc in subset.docs:
            exclude = doc if subset.fewshot_from_docs else None
            examples = fewshot_examples(subset.fewshot_pool, num_fewshot, rng, exclude)
            if isinstance(subset.task, ChoiceTask):
                prefix = "".join(e.demonstration() + FEWSHOT_DELIMITER for e in examples)
                subset.prompts.append([(prefix + context, continuation) for context, continuation in doc.pairs])
            else:
                demonstrations = (subset.task.demonstration(e) + FEWSHOT_DELIMITER for e in examples)
                subset.prompts.append("".join(demonstrations) + doc.prompt)


def load_language_model(config: EvalConfig) -> LanguageModel:
    from polylm.hf_checkpoint import load_model
    from polylm.hub import resolve_model_dir

    model_dir = resolve_model_dir(config.model)
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise PolyLMError(
            f"{model_dir}: no {TOKENIZER_FILE}; evaluation needs the model's SentencePiece tokenizer in its directory"
        )
    if config.prefix_token not in PREFIX_TOKENS:
        raise PolyLMError(f"--prefix-token must be one of {', '.join(PREFIX_TOKENS)}, got {config.prefix_token!r}")
    tokenizer = Tokenizer.from_dir(model_dir)
    model = load_model(model_dir, dtype=config.dtype, device=config.device)
    prefix = tokenizer.eos_id if config.prefix_token == "eos" else tokenizer.bos_id
    return LanguageModel(model, tokenizer, config.batch_size, prefix)


def _choice_scores(lls: list[list[float]], docs: list[ChoiceDoc]) -> dict[str, float]:
    """acc: argmax of the log-likelihoods; acc_norm: of log-likelihood per character of the choice."""
    correct = correct_norm = 0
    for doc, scores in zip(docs, lls, strict=True):
        lengths = [max(len(continuation.lstrip()), 1) for _, continuation in doc.pairs]
        correct += int(np.argmax(scores)) == doc.gold
        correct_norm += int(np.argmax(np.array(scores) / lengths)) == doc.gold
    return {"acc": correct / len(docs), "acc_norm": correct_norm / len(docs)}


def evaluate(config: EvalConfig) -> dict:
    """Run the evaluation; returns the output document (results[task][lang][metric] plus what produced it)."""
    from polylm.evaluate.report import build_report

    started = time.time()
    subsets = load_subsets(config)
    build_prompts(subsets, config.num_fewshot, config.seed)
    lm = load_language_model(config)
    choice = [s for s in subsets if isinstance(s.task, ChoiceTask)]
    generation = [s for s in subsets if isinstance(s.task, GenerationTask)]
    scored = [
        Instance("loglikelihood", s.task.name, s.lang, doc, number, context, continuation)
        for s in choice
        for doc, doc_pairs in enumerate(s.prompts)
        for number, (context, continuation) in enumerate(doc_pairs)
    ]
    asked = {
        (s.task.name, s.lang): [
            Instance("generate_until", s.task.name, s.lang, doc, 0, prompt) for doc, prompt in enumerate(s.prompts)
        ]
        for s in generation
    }
    total = len(scored) + sum(map(len, asked.values()))
    scores: dict[tuple[str, str], tuple[dict, dict]] = {}
    with progress_bar(total=total, desc="evaluating", unit="request") as progress:
        answer_in_order(scored, lm.loglikelihood([i.pair for i in scored], progress))
        per_doc: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        for instance in scored:
            per_doc[instance.task, instance.lang, instance.doc].append(instance.result)
        for s in choice:
            lls = [per_doc[s.task.name, s.lang, doc] for doc in range(len(s.docs))]
            scores[s.task.name, s.lang] = _choice_scores(lls, s.docs), {}
        for s in generation:
            gen_config = GenerationConfig(
                max_new_tokens=config.max_new_tokens or s.task.max_new_tokens,
                num_beams=config.num_beams,
                early_stopping=config.num_beams > 1,
                eos_token_id=lm.tokenizer.eos_id,
            )
            instances = asked[s.task.name, s.lang]
            answers = lm.generate_until([i.context for i in instances], s.task.stop, gen_config, progress)
            answer_in_order(instances, answers)
            scores[s.task.name, s.lang] = s.task.score(s.lang, [i.result for i in instances], s.docs)
    model_info = {
        "dir": str(config.model),
        "parameters": count_parameters(lm.model.config),
        "dtype": lm.model.config.dtype,
        "max_position_embeddings": lm.max_length,
    }
    requests = {"loglikelihood": len(scored), "generate_until": total - len(scored)}
    return build_report(dataclasses.asdict(config), subsets, scores, model_info, requests, time.time() - started)
