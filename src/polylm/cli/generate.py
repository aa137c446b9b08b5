"""`polylm generate` and `polylm chat`: decoding from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polylm.cli import options
from polylm.templates import TEMPLATES


def _generation_config(args: argparse.Namespace):
    from polylm.generate.config import GenerationConfig

    return GenerationConfig(**options.values(args, GenerationConfig, args.decoding_defaults))


def _text_generator(args: argparse.Namespace):
    from polylm.generate import TextGenerator

    return TextGenerator.load(args.model, args.template, args.dtype, args.device)


def _generate(args: argparse.Namespace) -> None:
    from polylm.generate.text import read_prompts
    from polylm.progress import progress_bar

    config = _generation_config(args)
    prompts = read_prompts(Path(args.prompt_file)) if args.prompt_file else [args.prompt]
    generator = _text_generator(args)
    if len(prompts) == 1 and not args.json and config.num_return_sequences == 1:
        for piece in generator.stream(prompts[0], config):
            print(piece, end="", flush=True)
        print()
        return
    with progress_bar(total=len(prompts), desc="generating", unit="prompt", disable=len(prompts) < 2) as progress:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            for prompt, row in zip(batch, generator(batch, config), strict=True):
                best = row[0]
                if not args.json:
                    progress.write("\n\n".join(g.text for g in row))
                    continue
                record = {"prompt": prompt, **best.record()}
                if len(row) > 1:
                    record["sequences"] = [g.record() for g in row]
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


def _add_generation_options(parser: argparse.ArgumentParser, **defaults: object) -> None:
    """Every GenerationConfig field as a flag (transformers' names and meanings); `defaults` are this command's."""
    from polylm.generate.config import GenerationConfig

    group = parser.add_argument_group("decoding (GenerationConfig; docs/generation.md)")
    options.add_fields(group, GenerationConfig, defaults)
    never = "never stop on a token (only on length or --stop); the same as --eos-token-id alone"
    group.add_argument("--no-eos", dest="eos_token_id", action="store_const", const=[], default=argparse.SUPPRESS,
                       help=never)  # fmt: skip
    parser.set_defaults(decoding_defaults=defaults)


def register(verbs: argparse._SubParsersAction) -> None:
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
    _add_generation_options(
        chat, do_sample=True, max_new_tokens=512, temperature=0.7, top_p=0.8, repetition_penalty=1.02
    )
    chat.set_defaults(run=_chat)
