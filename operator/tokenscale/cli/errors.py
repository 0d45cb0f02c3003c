"""The CLI's exit statuses and its one error format, `error: WHERE: MESSAGE` on stderr.

Called by every command module of `tokenscale.cli` (they raise `UsageError`) and by `main`, which
turns the errors into the line and the exit status. `Parser` gives argparse's usage errors the same
format.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, TypeAlias

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_PROMETHEUS_UNREADABLE = 3  # `plan --prometheus`: no query answered (unreachable, timeout, HTTP error, garbage)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class PrometheusUnreadable(Exception):
    """`plan --prometheus` could not read Prometheus at all: printed as one line, exit status 3."""


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors in the one error format (`error: tokenscale simulate: ...`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


# What each command module's `add_parser` adds its subcommand to.
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"
