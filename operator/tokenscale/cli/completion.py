"""`tokenscale completion bash|zsh`: print a shell completion script generated from the CLI's parser.

Called by `tokenscale.cli.build_parser`; the script itself is written by `tokenscale.completion`.
"""

from __future__ import annotations

import argparse
import sys

from tokenscale import completion
from tokenscale.cli.errors import EXIT_OK, Subparsers


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "completion",
        help="print a shell completion script: source <(tokenscale completion bash)",
        description="Print a completion script for bash or zsh, e.g. `source <(tokenscale completion bash)` "
        'in ~/.bashrc, or `tokenscale completion zsh > "${fpath[1]}/_tokenscale"`.',
    )
    p.add_argument("shell", choices=completion.SHELLS, help="the shell")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenscale.cli import build_parser  # the whole parser, this command's included: built after import

    sys.stdout.write(completion.script(build_parser(), args.shell))
    return EXIT_OK
