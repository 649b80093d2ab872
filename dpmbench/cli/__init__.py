"""Command line: ``dpmbench list|sample|reference|evaluate|metrics-job|validate|report|recommend|regress|search|
prepare|pull|train``. Bad input: one line, exit code 2. The parser lives in ``parser``, the commands in ``commands``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from dpmbench.cli import commands
from dpmbench.cli.parser import EXIT_USAGE, build_parser
from dpmbench.errors import DpmbenchError

EXIT_BROKEN_PIPE = 128 + 13  # as a process ended by SIGPIPE


COMMANDS = {name: getattr(commands, "cmd_" + name.replace("-", "_")) for name in (
    "list", "sample", "reference", "evaluate", "metrics-job", "validate", "report", "recommend", "regress", "search",
    "prepare", "pull", "train")}


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwind, so that atomic writes remove their temporary files


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dpmbench`` console script."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    args = build_parser().parse_args(argv)
    from dpmbench.download import trusting

    try:
        with trusting(getattr(args, "trust_unpinned", False)):  # the per-run opt-in to unpinned files
            code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, while it can still be handled
    except DpmbenchError as exc:
        print(f"dpmbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `dpmbench list solvers | head`: the reader has gone; stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_BROKEN_PIPE
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
