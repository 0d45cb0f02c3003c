"""`tokenscale validate`: check InferencePool manifests the way the API server and the operator will.

Called by `tokenscale.cli.build_parser`. `load_one_pool` (a manifest read and checked the same way)
is also how `plan` and `simulate` read their `-f`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenscale import manifests
from tokenscale.cli.errors import EXIT_INVALID, EXIT_OK, Subparsers
from tokenscale.cli.flags import output_flag, stdin_once
from tokenscale.cli.output import print_result
from tokenscale.planner import profiles


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("validate", help="check InferencePool manifests the way the API server and operator will")
    p.add_argument("-f", "--file", action="append", required=True, help="manifest file (repeatable; - reads stdin)")
    output_flag(p)
    p.set_defaults(func=run)


def lookups(loaded: manifests.LoadedPool) -> None:
    """What the operator looks up before planning (GPU and model presets, the replica model): a
    ManifestError naming the line of the first problem."""
    found = profiles.problems(loaded.pool.spec)
    if found:
        where = loaded.where(found[0][0])
        raise manifests.ManifestError(f"{where}: InferencePool {loaded.name}: {'; '.join(m for _, m in found)}")


def load_one_pool(path: str) -> manifests.LoadedPool:
    """The one InferencePool in the manifest at `path` (`-` for stdin), checked like `validate` checks it."""
    loaded = manifests.load_one_pool(Path(path))
    lookups(loaded)
    return loaded


def run(args: argparse.Namespace) -> int:
    stdin_once([("-f", path) for path in args.file])
    results: list[dict[str, object]] = []  # -o json|yaml: one record per pool (or per unreadable file)
    valid_lines: list[str] = []  # -o table
    for path in args.file:
        try:
            pools = manifests.load_pools(Path(path))
        except manifests.ManifestError as err:
            print(f"error: {err}", file=sys.stderr)
            results.append({"file": manifests.source_name(Path(path)), "valid": False, "error": str(err)})
            continue
        for loaded in pools:
            spec = loaded.pool.spec
            try:
                lookups(loaded)
            except manifests.ManifestError as err:
                print(f"error: {err}", file=sys.stderr)
                results.append({"file": loaded.source, "name": loaded.name, "valid": False, "error": str(err)})
                continue
            roles = list(spec.active_pools())
            valid_lines.append(
                f"{loaded.source}: InferencePool {loaded.name} is valid ({spec.mode}: {', '.join(roles)})"
            )
            results.append(
                {"file": loaded.source, "name": loaded.name, "valid": True, "mode": spec.mode, "pools": roles}
            )
    if args.output == "table":
        for line in valid_lines:
            print(line)
    else:
        print_result(args.output, results)
    return EXIT_OK if all(r["valid"] for r in results) else EXIT_INVALID
