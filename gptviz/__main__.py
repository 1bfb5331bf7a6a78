"""Command line: a prompt's tokens and the model's top next tokens.

    python -m gptviz "The capital of France is" [--model NAME_OR_PATH] [--top 10] [--json]
    python -m gptviz "ROMEO:" --model out-shakespeare-char/ckpt.pt
    python -m gptviz "Every effort moves" --model model.pth --n-heads 12

A weight file a user saved takes the options of gptviz/weights/file_options.py for what it cannot say.
"""
from __future__ import annotations

import argparse
import json
import sys

from gptviz.loading import default_model_name, load_model
from gptviz.sampling import top_tokens
from gptviz.trace import trace
from gptviz.weights import FILE_OPTIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gptviz", description=__doc__.splitlines()[0])
    parser.add_argument("prompt", help="the text to read")
    parser.add_argument("--model", default=None, help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, smollm2-135m, "
                        "a Hugging Face repo id (owner/name), a local HF-format directory, a .gguf file, or a "
                        "saved state dict (.pth, .pt, .bin, .ckpt, .safetensors: the book's GPTModel, Llama3Model "
                        "or Qwen3Model, nanoGPT's ckpt.pt) (default: the first available offline)")
    parser.add_argument("--top", type=int, default=10, help="how many next tokens to list")
    parser.add_argument("--allow-special", action="store_true", help="treat <|...|> text as special tokens")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    saved = parser.add_argument_group("a saved state dict", "what the file cannot say (the book's cfg values)")
    for option in FILE_OPTIONS:
        saved.add_argument("--" + option.name.replace("_", "-"), dest=option.name, default=None, help=option.help)
    return parser.parse_args(argv)


def model_options(args: argparse.Namespace) -> dict:
    """The file options given on the command line, parsed (ValueError for a value that does not parse)."""
    options = {}
    for option in FILE_OPTIONS:
        text = getattr(args, option.name)
        if text is not None:
            try:
                options[option.name] = option.parse(text)
            except ValueError as e:
                raise ValueError(f"--{option.name.replace('_', '-')} {text!r}: {e}") from e
    return options


def summarize(model, prompt: str, top: int, allow_special: bool) -> dict:
    tr = trace(model, prompt, allow_special=allow_special)
    ids, logits, probs = top_tokens(tr.last_logits, top)
    return {
        "model": model.name,
        "tokens": [{"id": i, "token": t} for i, t in zip(tr.ids, tr.tokens)],
        "next": [
            {"id": i, "token": token, "prob": p, "logit": g}
            for i, token, p, g in zip(ids.tolist(), model.tokenizer.token_strings(ids.tolist()), probs.tolist(),
                                      logits.tolist())
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = load_model(args.model or default_model_name(), **model_options(args))
        result = summarize(model, args.prompt, args.top, args.allow_special)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"{len(result['tokens'])} tokens:")
    for position, tok in enumerate(result["tokens"]):
        print(f"  {position:>4}  {tok['id']:>6}  {tok['token']!r}")
    print("next token:")
    for item in result["next"]:
        print(f"  {item['prob']:8.2%}  {item['id']:>6}  {item['token']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
