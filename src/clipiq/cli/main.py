"""The ``clipiq`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from clipiq import __version__
from clipiq.core.errors import ClipIQError
from clipiq.core.registry import Registry

# Each command is a module exposing register(subparsers); a new command is an entry here, not a branch.
COMMANDS: Registry = Registry("command")
for _module in ("score", "restore", "info", "bench", "make_dataset", "train", "adapt", "explain", "serve"):
    COMMANDS.register_lazy(_module, f"clipiq.cli.{_module}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="clipiq", description="CLIP for image quality assessment and restoration")
    parser.add_argument("--version", action="version", version=f"clipiq {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn expected errors into one clear line and exit code 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`clipiq train T --config F a.b=1`).
    overrides_only = all("=" in e and not e.startswith("-") for e in extra)
    if extra and getattr(args, "overrides", None) is not None and overrides_only:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FloatingPointError as e:  # a diverging training run: say so in one line, not a traceback
        if args.verbose >= 2:
            raise
        print(f"clipiq {args.command}: error: training diverged: {e} (lower train.lr, or set train.grad_clip)",
              file=sys.stderr)
        return 1
    except (ClipIQError, ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        if args.verbose >= 2:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"clipiq {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
