"""Printing a command's result in the `-o` format: JSON, YAML, or a table for people.

Called by the command modules of `tokenscale.cli` that print a result (validate, plan, simulate).
"""

from __future__ import annotations

import json
import sys

import yaml

from tokenscale import tables


def print_result(fmt: str, data: object, table: tables.Table | None = None) -> None:
    """Print a command's result in the `-o` format: JSON, YAML, or the table for people."""
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    elif table is not None:
        sys.stdout.write(tables.render(table, tables.terminal_width()))
