"""The ``qwen-docs`` command: create stand-in checkpoints and print the runtime facts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from .errors import QwenDocsError
from .published import known_model_ids, likely_typo_of, no_recipe

#: What --help says (the docstring above is reST, for the API reference).
_DESCRIPTION = "Create stand-in checkpoints and print the runtime facts."
#: What ``qwen-docs standins --help`` says.
_STANDINS_DESCRIPTION = (
    "Make model ids loadable offline from a private Hugging Face hub cache (never your own): real weights found in "
    "your hub cache are linked, other ids get a stand-in (the real tokenizer and architecture with tiny random "
    "weights). It prints one line per model (id, real or standin, folder), then the `export HF_HUB_CACHE=... "
    "HF_HUB_OFFLINE=1` line to run before starting Python so that from_pretrained loads them."
)
#: What to do about a file error (a folder that cannot be made or read), per command.
_FILE_FIXES = {
    "standins": "pass a --cache-dir you can create and write (or set $QWEN_DOCS_CACHE)",
    "env": "check that HF_HUB_CACHE (or HF_HOME) and --cache-dir (or $QWEN_DOCS_CACHE) name folders you can read",
}
#: Where the private cache is, as standins.default_cache_dir finds it.
_CACHE_HELP = ("private cache folder (default: $QWEN_DOCS_CACHE, else .cache/qwen-docs of the qwen-docs checkout "
               "you are in, else ~/.cache/qwen-docs)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _folder(text: str) -> Path:
    """A folder argument; an empty one (which would mean the current directory) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path would write into the current directory; name a folder")
    return Path(text)


def _model_id(text: str) -> str:
    """A model id argument: an id with a stand-in recipe, else the line that says how to give it one."""
    if text in known_model_ids():
        return text
    typo_of = likely_typo_of(text)
    if typo_of is not None:
        raise argparse.ArgumentTypeError(f"{text} has no stand-in recipe: did you mean {typo_of}?")
    raise argparse.ArgumentTypeError(f"{no_recipe(text)}; ids with one: {', '.join(known_model_ids())}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qwen-docs", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    standins = commands.add_parser(
        "standins",
        help="make model ids loadable offline from a private hub cache (real weights linked, else stand-ins)",
        description=_STANDINS_DESCRIPTION,
    )
    standins.add_argument("--cache-dir", type=_folder, help=_CACHE_HELP)
    standins.add_argument(
        "ids", nargs="*", metavar="ID", type=_model_id,
        help="model ids to prepare (default: every id in published_configs.json)",
    )
    standins.add_argument(
        "--model", action="append", dest="models", metavar="ID", type=_model_id, default=[],
        help="a model id to prepare, as a positional ID does (repeatable)",
    )
    standins.add_argument("--force", action="store_true", help="rebuild stand-ins even when up to date")
    standins.add_argument("--no-real", action="store_true", help="ignore real weights in your hub cache")

    env = commands.add_parser("env", help="print the runtime: device, versions, real or stand-in weights per model")
    env.add_argument("--json", action="store_true", help="machine-readable output")
    env.add_argument("--cache-dir", type=_folder, help=_CACHE_HELP)
    return parser


def _standins(args: argparse.Namespace) -> int:
    from .standins import export_line, prepare_hub

    cache_dir = args.cache_dir.resolve() if args.cache_dir else None
    chosen = list(dict.fromkeys([*args.ids, *args.models]))  # in the order given, each once
    results = prepare_hub(
        chosen or known_model_ids(),
        cache_dir=cache_dir,
        use_real=not args.no_real,
        force=args.force,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    for resolved in results:
        print(f"{resolved.model_id}\t{resolved.weights}\t{resolved.snapshot}")
    print(f"# load them offline with: {export_line(cache_dir)}", file=sys.stderr)
    return 0


def _env(args: argparse.Namespace) -> int:
    from .runtime import describe_runtime
    from .standins import hub_dir

    # the site build's stand-ins are in the private cache, not the hub cache in use: report both
    runtime = describe_runtime(private_hub=hub_dir(args.cache_dir.resolve() if args.cache_dir else None))
    print(json.dumps(asdict(runtime), indent=2) if args.json else runtime.as_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors are one line on stderr, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        return {"standins": _standins, "env": _env}[args.command](args)
    except QwenDocsError as error:  # already "<problem>: <fix>"
        print(f"qwen-docs {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. "[Errno 2] No such file or directory: '/proc/nope'": name the path, say the fix
        where = f": {error.filename}" if error.filename else ""
        problem = f"{error.strerror}{where}" if error.strerror else str(error)
        print(f"qwen-docs {args.command}: error: {problem}: {_FILE_FIXES[args.command]}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, RuntimeError) as error:
        print(f"qwen-docs {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qwen-docs {args.command}: interrupted; nothing half-written was left in place", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
