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


def _add_dataclass_flags(p: argparse.ArgumentParser, cls: type, unset: bool = False) -> None:
    """One flag per field of ``cls``: ``max_new_tokens`` -> ``--max-new-tokens``.  ``unset``: flags
    not given are None (the model's own defaults then apply, see ``api.model_decode_options``)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).split(" |")[0]
        default = None if unset else f.default
        helptext = f"default: {f.default}" + (" or the model's own" if unset else "")
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helptext)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(kind, str), default=default, help=helptext)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3 ...)")
    p.add_argument("--model", default=None, help="named model, checkpoint folder or model YAML")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    _add_dataclass_flags(p, DecodeOptions, unset=True)


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
    p.add_argument("--cache-only", action="store_true",
                   help="only build the frozen-encoder cache (no LLM loaded), e.g. ahead of training elsewhere")
    p = sub.add_parser("info", help="describe a checkpoint")
    p.add_argument("checkpoint")
    _add_serve_flags(sub.add_parser("serve", help="OpenAI-compatible speech server with a web demo"))
    _add_data_eval_parsers(sub)
    return parser


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ServeConfig field; the API key may also come from $SPEECHLLM_API_KEY."""
    import os

    from speechllm.serve.config import ServeConfig

    _add_dataclass_flags(p, ServeConfig)
    p.set_defaults(api_key=os.environ.get("SPEECHLLM_API_KEY") or None)


def cmd_serve(args: argparse.Namespace) -> None:
    from speechllm.runtime import limit_heap_growth
    from speechllm.serve import ServeConfig, serve

    limit_heap_growth()

    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}
    serve(settings.pop("model"), **settings)


def _decode_kwargs(args: argparse.Namespace) -> dict:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeOptions)}
    return {k: v for k, v in given.items() if v is not None}


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
    from speechllm.runtime import limit_heap_growth
    from speechllm.train import TrainConfig, train

    limit_heap_growth()

    result = train(load_config(TrainConfig, args.config, args.overrides), resume=args.resume,
                   cache_only=args.cache_only)
    print(json.dumps(result))


def cmd_info(args: argparse.Namespace) -> None:
    from speechllm.inventory import describe_checkpoint

    print(json.dumps(describe_checkpoint(Path(args.checkpoint)), indent=2))


def _add_data_eval_parsers(sub) -> None:
    """``data import|synth|texts|voices`` (speechllm.data, speechllm.tts) and ``eval`` (speechllm.evaluate)."""
    data = sub.add_parser("data", help="import manifests, synthesize speech").add_subparsers(dest="data_command",
                                                                                             required=True)
    p = data.add_parser("import", help="a shared set (an4:test), Kaldi dir or SLAM-LLM JSONL -> CutSet JSONL")
    p.add_argument("source", help="shared set name[:split], Kaldi data dir, SLAM-LLM JSONL or CutSet JSONL")
    p.add_argument("--out", required=True, help="manifest to write (.jsonl or .jsonl.gz)")
    p.add_argument("--split", default=None)
    p = data.add_parser("synth", help="sentences x TTS voices -> 16 kHz FLAC + manifest (cached)")
    p.add_argument("--texts", required=True, help="text file, one sentence per line")
    p.add_argument("--voices", required=True, help="comma-separated, e.g. piper:joe,flite:slt")
    p.add_argument("--out", required=True, help="output folder (audio/ and manifest.jsonl.gz)")
    p.add_argument("--limit", type=int, default=None, help="first N sentences only")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--voices-per-text", type=int, default=1)
    p.add_argument("--split", default="train", help="train removes evaluation sentences, refuses held-out voices")
    p.add_argument("--allow-held-out", action="store_true")
    p = data.add_parser("texts", help="natural sentences from shared/data/tts_text, evaluation sentences removed")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=None)
    data.add_parser("voices", help="TTS voices installed here")
    p = sub.add_parser("eval", help="WER/CER, RTF and memory of a model on a manifest")
    p.add_argument("manifest", help="CutSet JSONL, shared set name[:split], Kaldi dir or SLAM-LLM JSONL")
    p.add_argument("--model", default=None, help="named model, checkpoint folder or model YAML")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument("--out", default=None, help="folder for results.json, results.md, hyps.tsv")
    p.add_argument("--batch-size", type=int, default=8)
    _add_dataclass_flags(p, DecodeOptions, unset=True)


def cmd_data(args: argparse.Namespace) -> None:
    if args.data_command == "import":
        from speechllm.data import import_dataset, save_manifest

        cuts = import_dataset(args.source, split=args.split)
        print(f"{save_manifest(cuts, args.out)}\t{len(cuts)} cuts")
    elif args.data_command == "synth":
        from speechllm.data.synth import build_synth_set

        r = build_synth_set(args.texts, args.voices, args.out, limit=args.limit, jobs=args.jobs,
                            voices_per_text=args.voices_per_text, split=args.split,
                            allow_held_out=args.allow_held_out)
        print(f"{r.manifest}\t{len(r.cuts)} clips ({r.synthesized} new, {r.cached} cached, {r.failed} failed)")
    elif args.data_command == "texts":
        from speechllm.data.texts import load_texts

        texts = load_texts(args.split)[: args.limit]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        print(f"{args.out}\t{len(texts)} sentences")
    else:
        from speechllm.tts import list_voices

        print("\n".join(list_voices()))


def cmd_eval(args: argparse.Namespace) -> None:
    from speechllm.evaluate import evaluate, markdown_table

    result = evaluate(args.manifest, args.model, limit=args.limit, out=args.out, batch_size=args.batch_size,
                      **_decode_kwargs(args))
    print(markdown_table([result]) + f"\n{result['out']}")


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
    handlers.update(data=cmd_data, eval=cmd_eval)
    try:
        handlers[args.command](args)
    except (AudioError, ConfigError, ValueError, FileNotFoundError, TypeError) as err:
        print(f"speechllm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
