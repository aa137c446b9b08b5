"""`polylm <verb>`: one command line over the package.

Each verb is a small function taking parsed arguments; user mistakes (PolyLMError) print one line
and exit 1, anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polylm.config import PRESETS, preset
from polylm.errors import PolyLMError

LANGUAGE_ARG_HELP = "text files, one sentence/document per line; prefix LANG= to name the language (else the file stem)"


def _info(args: argparse.Namespace) -> None:
    from polylm.checkpoint import read_config
    from polylm.hub import resolve_model_dir
    from polylm.model import count_parameters

    config = read_config(resolve_model_dir(args.model)) if args.model else preset(args.preset)
    parameters = count_parameters(config)
    bytes_per_param = {"float32": 4, "bfloat16": 2, "float16": 2}[config.dtype]
    summary = {
        "name": config.name,
        "layers": config.num_layers,
        "heads": config.num_heads,
        "hidden": config.hidden_size,
        "ffn": config.ffn_size,
        "context": config.max_position_embeddings,
        "vocab": config.vocab_size,
        "parameters": parameters,
        "dtype": config.dtype,
        "weights_gib": round(parameters * bytes_per_param / 1024**3, 3),
    }
    if args.json:
        print(json.dumps({**summary, "config": config.to_dict()}))
        return
    for key, value in summary.items():
        print(f"{key:<12}{value:,}" if isinstance(value, int) else f"{key:<12}{value}")


def _init(args: argparse.Namespace) -> None:
    from polylm.checkpoint import save_model
    from polylm.model import build_model, count_parameters
    from polylm.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(args.tokenizer)
    config = preset(args.preset)
    if tokenizer.vocab_size != config.vocab_size:
        print(
            f"vocab_size {config.vocab_size} -> {tokenizer.vocab_size} to match {tokenizer.model_file}", file=sys.stderr
        )
        config = config.replace(vocab_size=tokenizer.vocab_size)
    if args.dtype:
        config = config.replace(dtype=args.dtype)
    model = build_model(config, seed=args.seed)
    save_model(model, args.out, tokenizer=tokenizer)
    print(
        f"wrote {config.name} ({count_parameters(config):,} parameters, {config.dtype}, seed {args.seed}) to {args.out}"
    )


def _tokenizer_train(args: argparse.Namespace) -> None:
    from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

    config = TokenizerTrainingConfig(
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        max_sentences=args.max_sentences,
        sampling_alpha=args.sampling_alpha,
        character_coverage=args.character_coverage,
        normalization=args.normalization,
        split_digits=not args.no_split_digits,
        seed=args.seed,
        num_threads=args.threads,
    )
    tokenizer = train_tokenizer(args.input, args.out, config)
    print(f"wrote {tokenizer.model_file} ({tokenizer.vocab_size} pieces, {config.model_type})")


def _language_inputs(specs: list[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for spec in specs:
        language, sep, path = spec.partition("=")
        inputs[language if sep else Path(spec).name.split(".")[0]] = Path(path if sep else spec)
    return inputs


def _tokenizer_stats(args: argparse.Namespace) -> None:
    from polylm.tokenizer import Tokenizer, fertility

    tokenizer = Tokenizer.from_dir(args.tokenizer)
    rows = {lang: fertility(tokenizer, path, args.max_lines) for lang, path in _language_inputs(args.input).items()}
    if args.json:
        print(
            json.dumps(
                {
                    lang: {**vars(s), "tokens_per_char": s.tokens_per_char, "tokens_per_word": s.tokens_per_word}
                    for lang, s in rows.items()
                }
            )
        )
        return
    print(f"{'lang':<6}{'lines':>8}{'chars':>10}{'tokens':>10}{'tok/char':>10}{'tok/word':>10}{'bytes%':>8}")
    for lang, s in rows.items():
        byte_share = 100 * s.byte_fallback_tokens / max(s.tokens, 1)
        print(
            f"{lang:<6}{s.lines:>8}{s.characters:>10}{s.tokens:>10}{s.tokens_per_char:>10.3f}"
            f"{s.tokens_per_word:>10.3f}{byte_share:>8.2f}"
        )


def _generation_config(args: argparse.Namespace):
    from polylm.generate import GenerationConfig

    early_stopping = {"true": True, "false": False}.get(args.early_stopping, args.early_stopping)
    eos = args.eos_token_id[0] if args.eos_token_id and len(args.eos_token_id) == 1 else args.eos_token_id
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=args.num_return_sequences,
        eos_token_id=eos if args.eos_token_id else None if args.no_eos else 2,
        stop=args.stop or [],
        seed=args.seed,
    )


def _text_generator(args: argparse.Namespace):
    from polylm.checkpoint import load_model
    from polylm.generate import TextGenerator
    from polylm.hub import resolve_model_dir
    from polylm.tokenizer import Tokenizer

    model_dir = resolve_model_dir(args.model)
    model = load_model(model_dir, dtype=args.dtype, device=args.device)
    return TextGenerator(model, Tokenizer.from_dir(model_dir), args.template)


def _read_prompts(path: str) -> list[str]:
    """One prompt per line, or for prompts with newlines a .jsonl file of {"prompt": ...} objects."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolyLMError(f"{file}: cannot read prompts ({exc})") from None
    if file.suffix != ".jsonl":
        return [line for line in lines if line.strip()]
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            prompts.append(record if isinstance(record, str) else record["prompt"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PolyLMError(f'{file}: line {number} is not a JSON string or an object with a "prompt" key') from None
    return prompts


def _generate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    config = _generation_config(args)
    prompts = _read_prompts(args.prompt_file) if args.prompt_file else [args.prompt]
    generator = _text_generator(args)
    if len(prompts) == 1 and not args.json and config.num_return_sequences == 1:
        for piece in generator.stream(prompts[0], config):
            print(piece, end="", flush=True)
        print()
        return
    with tqdm(total=len(prompts), desc="generating", unit="prompt", disable=len(prompts) < 2) as progress:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            for prompt, row in zip(batch, generator(batch, config), strict=True):
                best = row[0]
                if not args.json:
                    progress.write("\n\n".join(g.text for g in row))
                    continue
                record = {
                    "prompt": prompt,
                    "text": best.text,
                    "token_ids": best.token_ids,
                    "finish_reason": best.finish_reason,
                }
                if len(row) > 1:
                    record["sequences"] = [
                        {"text": g.text, "token_ids": g.token_ids, "finish_reason": g.finish_reason} for g in row
                    ]
                progress.write(json.dumps(record, ensure_ascii=False))
            progress.update(len(batch))


def _chat(args: argparse.Namespace) -> None:
    config = _generation_config(args)
    generator = _text_generator(args)
    history: list[tuple[str, str]] = []
    print(
        f"polylm chat ({args.template} template{', multi-round' if args.multi_round else ''}). "
        "Type 'clear' to forget the conversation, 'stop' to quit.",
        file=sys.stderr,
    )
    while True:
        try:
            query = input("User: ")
        except EOFError:
            break
        if query.strip() == "stop":
            break
        if query.strip() == "clear":
            history.clear()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if not query.strip():
            continue
        print("PolyLM: ", end="", flush=True)
        pieces = []
        for piece in generator.stream(query, config, history if args.multi_round else ()):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        if args.multi_round:
            history.append((query, "".join(pieces)))


def _add_model_options(parser: argparse.ArgumentParser, template: str, templates: list[str]) -> None:
    parser.add_argument("--model", required=True, help="model directory, or a hub id such as DAMO-NLP-MT/polylm-1.7b")
    parser.add_argument("--template", default=template, choices=templates, help=f"prompt format (default {template})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the checkpoint's")


def _add_generation_options(parser: argparse.ArgumentParser, sample: bool = False, **defaults: float) -> None:
    """Decoding flags, transformers' names and meanings; `defaults` override the library's defaults."""
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=int, default=int(defaults.get("max_new_tokens", 128)))
    group.add_argument("--num-beams", type=int, default=1, help="beam search when > 1 (PolyLM's MT setting: 4)")
    group.add_argument("--length-penalty", type=float, default=1.0, help="beam score = logprob / length**this")
    group.add_argument(
        "--early-stopping",
        default="false",
        choices=["true", "false", "never"],
        help="beam search stopping rule, as transformers",
    )
    group.add_argument("--no-repeat-ngram-size", type=int, default=0)
    group.add_argument("--num-return-sequences", type=int, default=1)
    group.add_argument(
        "--do-sample",
        action=argparse.BooleanOptionalAction,
        default=sample,
        help=f"sample instead of greedy/beam (default {'on' if sample else 'off'})",
    )
    group.add_argument("--temperature", type=float, default=defaults.get("temperature", 1.0))
    group.add_argument("--top-k", type=int, default=int(defaults.get("top_k", 50)), help="0 keeps every token")
    group.add_argument("--top-p", type=float, default=defaults.get("top_p", 1.0))
    group.add_argument("--repetition-penalty", type=float, default=defaults.get("repetition_penalty", 1.0))
    group.add_argument("--seed", type=int, help="seed for sampling (reproducible output)")
    group.add_argument("--eos-token-id", type=int, nargs="+", metavar="ID", help="stop token id(s); default 2 (</s>)")
    group.add_argument("--no-eos", action="store_true", help="never stop on a token (only on length or --stop)")
    group.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable); not in the output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polylm", description="PolyLM: run, train, tune and evaluate the multilingual PolyLM models."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    info = verbs.add_parser(
        "info",
        help="print a model's shape and exact parameter count (no weights allocated)",
        description="Print a model's shape and exact parameter count. The model is built on the meta device, "
        "without allocating weights, so this is instant even for polylm-13b.",
    )
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named preset")
    source.add_argument("--model", help="a Hugging Face model directory or hub id (reads only config.json)")
    info.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    info.set_defaults(run=_info)

    init = verbs.add_parser(
        "init",
        help="write a randomly initialised model directory (Hugging Face layout)",
        description="Write a randomly initialised model (Megatron init: N(0, 0.006), output projections scaled by "
        "1/sqrt(2 x layers)) as a Hugging Face GPT2LMHeadModel directory with the tokenizer beside it. "
        "vocab_size follows the tokenizer.",
    )
    init.add_argument("--preset", required=True, choices=sorted(PRESETS))
    init.add_argument("--tokenizer", required=True, help="directory with tokenizer.model (its size sets vocab_size)")
    init.add_argument("--out", required=True, help="output model directory")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: the preset's")
    init.set_defaults(run=_init)

    tokenizer = verbs.add_parser("tokenizer", help="train a SentencePiece tokenizer or measure one")
    tok_verbs = tokenizer.add_subparsers(dest="tokenizer_verb", required=True, metavar="VERB")
    train = tok_verbs.add_parser(
        "train",
        help="train a byte-fallback SentencePiece model on language-balanced input",
        description="Train a SentencePiece model with PolyLM's conventions: <unk>=0 <s>=1 </s>=2, byte fallback, "
        "digits split, no BOS added. Each input file is one language; their lines are re-balanced so that each "
        "file's share is proportional to lines**alpha.",
    )
    train.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text files (.txt or .txt.gz)")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    train.add_argument("--out", required=True, help="output directory (tokenizer.model + transformers files)")
    train.add_argument("--max-sentences", type=int, default=2_000_000, help="sentences fed to the trainer in total")
    train.add_argument("--sampling-alpha", type=float, default=0.3, help="1 = proportional, 0 = equal per language")
    train.add_argument("--character-coverage", type=float, default=0.9995)
    train.add_argument("--normalization", default="identity", help="SentencePiece rule (identity keeps newlines)")
    train.add_argument("--no-split-digits", action="store_true", help="keep multi-digit pieces")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2)
    train.set_defaults(run=_tokenizer_train)

    stats = tok_verbs.add_parser(
        "stats",
        help="fertility (tokens per character and per word) per language",
        description="Fertility per language: tokens per character, tokens per whitespace word (not meaningful for "
        "zh/ja/th, which write no spaces) and the share of byte-fallback tokens.",
    )
    stats.add_argument("--tokenizer", required=True, help="directory with tokenizer.model, or the .model file")
    stats.add_argument("--input", nargs="+", required=True, metavar="[LANG=]FILE", help=LANGUAGE_ARG_HELP)
    stats.add_argument("--max-lines", type=int, help="read at most this many lines per file")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=_tokenizer_stats)

    from polylm.templates import TEMPLATES

    generate = verbs.add_parser(
        "generate",
        help="continue prompts: greedy, sampling or beam search",
        description="Continue prompts with a model, decoding exactly as transformers' generate does. "
        "PolyLM's translation setting: --num-beams 4 --early-stopping true --max-new-tokens 128.",
    )
    _add_model_options(generate, "plain", list(TEMPLATES))
    prompt = generate.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text")
    prompt.add_argument(
        "--prompt-file", help='one prompt per line, or a .jsonl file of {"prompt": ...} for prompts with newlines'
    )
    generate.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    generate.add_argument(
        "--json", action="store_true", help="one JSON line per prompt: prompt, text, token_ids (generated only)"
    )
    _add_generation_options(generate)
    generate.set_defaults(run=_generate)

    chat = verbs.add_parser(
        "chat",
        help="talk to a tuned model in the terminal, with streaming",
        description="Interactive chat in PolyLM's formats. Type 'clear' to forget the conversation and 'stop' "
        "to quit. Defaults follow the official demo: sampling with top_p 0.8, temperature 0.7, "
        "repetition_penalty 1.02.",
    )
    _add_model_options(chat, "multialpaca", ["multialpaca", "chat"])
    chat.add_argument("--multi-round", action="store_true", help="keep earlier turns in the prompt")
    _add_generation_options(chat, sample=True, max_new_tokens=512, temperature=0.7, top_p=0.8, repetition_penalty=1.02)
    chat.set_defaults(run=_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except PolyLMError as exc:
        print(f"polylm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
