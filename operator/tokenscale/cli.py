"""The `tokenscale` command line: `crds`, `validate` (and, as they land, `plan`, `simulate`, `fit`, `run`).

Every command turns bad input into one line on stderr naming the file and field, and exit status 2;
no traceback reaches the user for a mistake in their input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tokenscale import crd, manifests

EXIT_OK = 0
EXIT_INVALID = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _cmd_crds(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.crd_yaml())
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.file:
        try:
            pools = manifests.load_pools(Path(path))
        except manifests.ManifestError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        for loaded in pools:
            spec = loaded.pool.spec
            roles = ", ".join(spec.active_pools())
            print(f"{loaded.source}: InferencePool {loaded.name} is valid ({spec.mode}: {roles})")
    return EXIT_INVALID if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenscale",
        description="SLO-aware autoscaler for LLM inference: size prefill and decode pools to TTFT/TPOT objectives.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crds", help="print the InferencePool CRD (YAML) generated from the API models")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("validate", help="check InferencePool manifests the way the API server and operator will")
    p.add_argument("-f", "--file", action="append", required=True, help="manifest file (repeatable)")
    p.set_defaults(func=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, manifests.ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
