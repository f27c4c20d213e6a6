"""``speechllm`` command line: a thin layer over :mod:`speechllm.api`; flags are the API's
keyword names (``--num-beams`` -> ``num_beams``).  Results go to stdout, logs to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from speechllm.decoding import DecodeOptions


def _add_dataclass_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls``: ``max_new_tokens`` -> ``--max-new-tokens``."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).split(" |")[0]
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(kind, str), default=f.default)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3 ...)")
    p.add_argument("--model", default=None, help="named model, checkpoint folder or model YAML")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    _add_dataclass_flags(p, DecodeOptions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechllm", description="Speech LLMs: build, run, evaluate.")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="registered components, bundled models, checkpoints found")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--search", nargs="*", default=["runs", "recipes"], help="folders to look for checkpoints in")
    _add_run_flags(sub.add_parser("transcribe", help="speech -> text"))
    p = sub.add_parser("chat", help="speech + instruction -> text")
    _add_run_flags(p)
    p.add_argument("--prompt", required=True, help="the instruction about the audio")
    p = sub.add_parser("train", help="train a Speech LLM from a YAML config")
    p.add_argument("config", help="training YAML (first line: the command that runs it)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. optim.max_steps=10")
    p.add_argument("--resume", action="store_true", help="continue from <run.out_dir>/last")
    p = sub.add_parser("info", help="describe a checkpoint")
    p.add_argument("checkpoint")
    _add_serve_flags(sub.add_parser("serve", help="OpenAI-compatible speech server with a web demo"))
    return parser


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ServeConfig field; the API key may also come from $SPEECHLLM_API_KEY."""
    import os

    from speechllm.serve.config import ServeConfig

    _add_dataclass_flags(p, ServeConfig)
    p.set_defaults(api_key=os.environ.get("SPEECHLLM_API_KEY") or None)


def cmd_serve(args: argparse.Namespace) -> None:
    from speechllm.serve import ServeConfig, serve

    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}
    serve(settings.pop("model"), **settings)


def _decode_kwargs(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeOptions)}


def cmd_run(args: argparse.Namespace) -> None:
    from speechllm import api

    model = args.model or api.DEFAULT_MODEL
    prompt = getattr(args, "prompt", None)
    texts = api.generate(args.files, prompt, model=model, batch_size=args.batch_size, **_decode_kwargs(args))
    for path, text in zip(args.files, texts):
        if args.format == "jsonl":
            print(json.dumps({"file": path, "model": model, "text": text}, ensure_ascii=False))
        else:
            print(text if len(args.files) == 1 else f"{path}\t{text}")


def cmd_models(args: argparse.Namespace) -> None:
    from speechllm.inventory import inventory

    inv = inventory([Path(p) for p in args.search])
    if args.format == "json":
        print(json.dumps(inv, indent=2))
        return
    for section, rows in inv.items():
        print(f"{section}:")
        for row in rows:
            print("  " + "  ".join(str(v) for v in row.values()))


def cmd_train(args: argparse.Namespace) -> None:
    from speechllm.config import load_config
    from speechllm.train import TrainConfig, train

    result = train(load_config(TrainConfig, args.config, args.overrides), resume=args.resume)
    print(json.dumps(result))


def cmd_info(args: argparse.Namespace) -> None:
    from speechllm.inventory import describe_checkpoint

    print(json.dumps(describe_checkpoint(Path(args.checkpoint)), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.verbose == 0:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    from speechllm.audio import AudioError
    from speechllm.config import ConfigError

    handlers = {"transcribe": cmd_run, "chat": cmd_run, "models": cmd_models, "info": cmd_info, "serve": cmd_serve,
                "train": cmd_train}
    try:
        handlers[args.command](args)
    except (AudioError, ConfigError, ValueError, FileNotFoundError, TypeError) as err:
        print(f"speechllm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
