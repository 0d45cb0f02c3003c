"""`tokenscale crds`: print the InferencePool CRD generated from the API models.

Called by `tokenscale.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from tokenscale import crd
from tokenscale.cli.errors import EXIT_OK, Subparsers
from tokenscale.cli.flags import output_flag


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("crds", help="print the InferencePool CRD generated from the API models")
    output_flag(p, ("yaml", "json"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.output == "json":
        print(json.dumps(yaml.safe_load(crd.crd_yaml()), indent=2))
    else:
        sys.stdout.write(crd.crd_yaml())
    return EXIT_OK
