"""The `tokenscale` command line: `crds`, `validate`, `plan`, `simulate`, `fit`, `profile`, `run`, `completion`.

The console script and `python -m tokenscale.cli` call `main`. Each command is one module of this
package with `add_parser(subparsers)` (its flags, and its handler as `func`); `errors`, `flags` and
`output` hold what they share.

Every command turns bad input into one line on stderr, `error: WHERE: MESSAGE`, where WHERE is
`file:line` (or the file alone, `<stdin>` for `-f -`), a `--flag`, or the command for a usage
error; exit status 2. No traceback reaches the user for a mistake in their input.
Every command that prints a result takes `-o json|yaml|table` (the format; JSON and YAML keys are
snake_case with units in their names); files are written only by flags named for them
(`--output-file`, `--out-dir`, `--points`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from tokenscale import manifests
from tokenscale.cli import completion, crds, fit, plan, profile, run, simulate, validate
from tokenscale.cli.errors import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PROMETHEUS_UNREADABLE,
    Parser,
    PrometheusUnreadable,
    UsageError,
)
from tokenscale.planner import profiles

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_PROMETHEUS_UNREADABLE", "build_parser", "main", "version"]

# In the order `tokenscale --help` and the completion script list them.
COMMANDS = (crds, validate, plan, simulate, fit, profile, run, completion)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tokenscale",
        description="SLO-aware autoscaler for LLM inference: size prefill and decode pools to TTFT/TPOT objectives.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("tokenscale")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # Huge inputs overflow to inf inside numpy, which the planner reads as "unreachable"; numpy's
    # RuntimeWarnings (with our source paths) would only bury the answer (issue 13).
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
        with np.errstate(all="ignore"):
            return func(args)
    except (UsageError, manifests.ManifestError, profiles.ProfileError) as err:
        # Only the user's mistakes end here; any other exception is a bug and keeps its traceback.
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except PrometheusUnreadable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROMETHEUS_UNREADABLE
    except KeyboardInterrupt:
        return 130
