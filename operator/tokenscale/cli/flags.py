"""Checks and shared definitions of the CLI's flags: numbers in range, durations, URLs, ports,
stdin read once, an output directory proven writable, and the `-o` flag every command shares.

Called by the command modules of `tokenscale.cli`; a bad value raises `UsageError` naming the flag.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from tokenscale import manifests
from tokenscale.api import parse_duration_s
from tokenscale.cli.errors import UsageError

# Bounds on the numeric flags: outside them a run is nonsense (a negative speed) or cannot finish
# (10^308 copies of a trace), so they are refused before any work starts (issue 13).
MAX_REPLAYED_REQUESTS = 20_000_000
SPEEDUP_RANGE = (1e-3, 1e4)
PERF_ERROR_RANGE = (-0.9, 9.0)  # the simulated decode step is (1 + x) × the prior's: 0.1× to 10×
MAX_COLD_START_S = 86_400.0
MAX_SERVE_RATE_PER_S = 1e5


def number_in(flag: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    """`value` if finite and within [low, high] (or (low, high] when `low_open`), else a UsageError naming the flag."""
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        bracket = "(" if low_open else "["
        where = f"{'>' if low_open else '≥'} {low:g}" if math.isinf(high) else f"in {bracket}{low:g}, {high:g}]"
        raise UsageError(f"{flag}: must be a finite number {where}, got {value:g}")
    return value


def duration_flag(flag: str, text: str | None, default_s: float) -> float:
    """Seconds in a duration flag such as `--cold-start 180s`; the default when it is not given."""
    if text is None:
        return default_s
    try:
        seconds = parse_duration_s(text)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None
    return number_in(flag, seconds, 0.0, MAX_COLD_START_S)


def url_flag(flag: str, text: str) -> str:
    """`text` if it is an http:// or https:// URL with a host (and a valid port), else a UsageError naming the flag."""
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 (parsing the port is the check)
    except ValueError as err:
        raise UsageError(f"{flag}: {text!r} is not a URL: {err}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UsageError(f"{flag}: {text!r} is not an http:// or https:// URL")
    return text


def port_flag(flag: str, port: int) -> int:
    """`port` if it is a TCP port number, else a UsageError naming the flag."""
    if not 0 <= port <= 65535:
        raise UsageError(f"{flag}: a TCP port is 0-65535, got {port}")
    return port


def prepare_out_dir(flag: str, out: Path) -> list[Path]:
    """Create `out` (and missing parents) and prove it writable, before a long run rather than after it.

    Returns the directories created, deepest first, so a run that fails can remove them again.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag}: {out} exists and is not a directory")
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        remove_empty(created)
        raise UsageError(f"{flag}: cannot write to {out}: {err.strerror or err}") from None
    return created


def remove_empty(dirs: Sequence[Path]) -> None:
    """Remove the directories a failed run created, deepest first, while they are empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def stdin_once(flag_paths: Sequence[tuple[str, str | None]]) -> None:
    """Standard input can be read once: refuse a second `-` among the file flags."""
    dashes = [flag for flag, path in flag_paths if path == manifests.STDIN]
    if len(dashes) > 1:
        raise UsageError(f"{', '.join(dashes)}: only one input can be read from stdin (-)")


def output_flag(
    p: argparse.ArgumentParser, formats: Sequence[str] = ("table", "json", "yaml"), help_extra: str = ""
) -> None:
    """`-o/--output FORMAT`: the one meaning of -o in every command."""
    p.add_argument(
        "-o", "--output", choices=formats, default=formats[0], help=f"output format (default {formats[0]}{help_extra})"
    )
