"""`moesd` command line: each subcommand module in `moesd.commands` declares its flags and its run; this
file only builds the parser from that list and dispatches."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import warnings

from moesd.commands import COMMANDS, MODULES
from moesd.commands.flags import HelpFormatter, Parser, subparsers
from moesd.errors import MoesdError



def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="moesd", formatter_class=HelpFormatter,
                    description="Speculative decoding on Mixture-of-Experts: predict, fit, schedule, measure.",
                    epilog="examples:\n  moesd predict --target Qwen3-30B-A3B --hardware H100-SXM --acceptance-rate 0.55 "
                           "--gamma 4\n  moesd <command> --help   (every command lists its options and examples)")
    parser.add_argument("--version", action="version", version=f"moesd {_version()}")
    sub = subparsers(parser, "command")
    for name in COMMANDS:
        module = importlib.import_module(f"moesd.commands.{MODULES.get(name, name)}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter,
                           epilog=getattr(module, "EXAMPLES", None))
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("moesd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    # transformers' deprecation notices (e.g. `past_key_values`, which engine/hf_compat.py owns) would bury
    # the progress lines; they are for library authors, not for users of our commands.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*deprecated and will be removed in version")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformers\.")
    try:
        parser = build_parser()
        argv = sys.argv[1:] if argv is None else argv
        if not argv:
            sys.stdout.write(parser.format_help())
            return 0
        args = parser.parse_args(argv)
        text = args.run(args)
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            return 0  # `moesd ... | head`: the reader left, nothing is wrong
        except OSError as exc:
            print(f"moesd: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
            return 2
    except MoesdError as exc:
        print(f"moesd: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"moesd: error: {exc.name or exc} is not installed; the engine needs pip install -e '.[engine]'",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
