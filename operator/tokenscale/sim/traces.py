"""Request-trace readers: Azure LLM inference CSV, Mooncake JSONL and a plain CSV, into a `Workload`.

Called by `tokenscale simulate --trace FILE|NAME` (through `read_trace`, which detects the format; a
named public trace is first fetched by `public_traces.py`), and by the tests and benchmarks. Formats:

- Azure LLM inference trace (Patel et al., "Splitwise", ISCA 2024; AzurePublicDataset):
  header `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like `2023-11-16 18:15:46.6805900`
  (seven fractional digits, no time zone; read as UTC).
- Mooncake trace (Qin et al., FAST 2025): JSON lines with `timestamp` (milliseconds),
  `input_length`, `output_length`; other keys (`hash_ids`) are ignored.
- Plain CSV: header `t_s,isl,osl` (seconds, tokens, tokens).

Rows out of time order are sorted (stably); the first request is put at t = 0. A length of 0 is read
as 1 (an engine emits at least one token and a prompt has at least one); negative or non-integer
lengths, unparsable times and missing columns raise `TraceError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Literal, TextIO

from tokenscale.sim.workload import Workload, make_workload

TraceFormat = Literal["azure", "mooncake", "plain"]

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PLAIN_COLUMNS = ("t_s", "isl", "osl")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")

_AZURE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)(?:Z|\+00:?00)?")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, the line and the problem."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


def detect_format(path: Path) -> TraceFormat:
    """`.jsonl`/`.json` → Mooncake; otherwise the CSV header decides: `TIMESTAMP` → Azure, `t_s` → plain."""
    if path.suffix.lower() in (".jsonl", ".json"):
        return "mooncake"
    header = _first_line(path)
    columns = tuple(c.strip() for c in header.split(","))
    # One marker column decides; the reader then names any other column that is missing.
    if AZURE_COLUMNS[0] in columns:
        return "azure"
    if PLAIN_COLUMNS[0] in columns:
        return "plain"
    if header.lstrip().startswith("{"):
        return "mooncake"
    raise TraceError(
        path,
        1,
        f"unrecognized header {header.strip()[:80]!r}: expected {','.join(AZURE_COLUMNS)} (Azure), "
        f"{','.join(PLAIN_COLUMNS)} (plain CSV) or JSON lines with {', '.join(MOONCAKE_KEYS)} (Mooncake)",
    )


def read_trace(path: str | Path, fmt: TraceFormat | None = None) -> Workload:
    """Read any supported trace; `fmt` overrides detection."""
    p = Path(path)
    kind = fmt or detect_format(p)
    if kind == "azure":
        return read_azure_csv(p)
    if kind == "mooncake":
        return read_mooncake_jsonl(p)
    return read_plain_csv(p)


def read_azure_csv(path: str | Path) -> Workload:
    """The Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`)."""
    p = Path(path)
    t: list[float] = []
    isl: list[int] = []
    osl: list[int] = []
    day0: list[int] = []  # ordinal of the first row's date: keeps seconds small and exact
    day_cache: dict[str, int] = {}
    for line_no, row, col in _csv_rows(p, AZURE_COLUMNS):
        stamp = row[col[0]].strip()
        m = _AZURE_TIME.fullmatch(stamp)
        if m is None:
            raise TraceError(p, line_no, f"TIMESTAMP {stamp!r} is not 'YYYY-MM-DD HH:MM:SS[.fraction]'")
        day_text, hh, mm, ss = m.groups()
        day = day_cache.get(day_text)
        if day is None:
            try:
                day = date.fromisoformat(day_text).toordinal()
            except ValueError as exc:
                raise TraceError(p, line_no, f"TIMESTAMP {stamp!r}: {exc}") from None
            day_cache[day_text] = day
        if not day0:
            day0.append(day)
        hours, minutes, seconds = int(hh), int(mm), float(ss)
        if hours > 23 or minutes > 59 or seconds >= 61.0:
            raise TraceError(p, line_no, f"TIMESTAMP {stamp!r} has an out-of-range time of day")
        t.append((day - day0[0]) * 86400.0 + hours * 3600.0 + minutes * 60.0 + seconds)
        isl.append(_tokens(p, line_no, "ContextTokens", row[col[1]]))
        osl.append(_tokens(p, line_no, "GeneratedTokens", row[col[2]]))
    return _finish(p, "Azure LLM inference trace", t, isl, osl)


def read_plain_csv(path: str | Path) -> Workload:
    """A plain CSV with header `t_s,isl,osl` (arrival in seconds, prompt and output tokens)."""
    p = Path(path)
    t: list[float] = []
    isl: list[int] = []
    osl: list[int] = []
    for line_no, row, col in _csv_rows(p, PLAIN_COLUMNS):
        text = row[col[0]].strip()
        try:
            value = float(text)
        except ValueError:
            raise TraceError(p, line_no, f"t_s {text!r} is not a number") from None
        if not math.isfinite(value):
            raise TraceError(p, line_no, f"t_s {text!r} is not finite")
        t.append(value)
        isl.append(_tokens(p, line_no, "isl", row[col[1]]))
        osl.append(_tokens(p, line_no, "osl", row[col[2]]))
    return _finish(p, "plain CSV trace", t, isl, osl)


def read_mooncake_jsonl(path: str | Path) -> Workload:
    """Mooncake JSON lines: `timestamp` (ms), `input_length`, `output_length` per line."""
    p = Path(path)
    t: list[float] = []
    isl: list[int] = []
    osl: list[int] = []
    with _open(p) as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(p, line_no, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
            if not isinstance(record, dict):
                raise TraceError(p, line_no, "expected a JSON object per line")
            missing = [k for k in MOONCAKE_KEYS if k not in record]
            if missing:
                raise TraceError(p, line_no, f"missing key(s) {', '.join(missing)}")
            stamp = record["timestamp"]
            if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
                raise TraceError(p, line_no, f"timestamp {stamp!r} is not a finite number of milliseconds")
            t.append(float(stamp) / 1000.0)
            isl.append(_tokens(p, line_no, "input_length", record["input_length"]))
            osl.append(_tokens(p, line_no, "output_length", record["output_length"]))
    return _finish(p, "Mooncake trace", t, isl, osl)


def _open(path: Path) -> TextIO:
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(path, None, f"cannot open: {exc.strerror or exc}") from None


def _first_line(path: Path) -> str:
    with _open(path) as f:
        try:
            return str(f.readline())
        except UnicodeDecodeError:
            raise TraceError(path, 1, "not UTF-8 text") from None


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str], tuple[int, ...]]]:
    """Yield (line number, row, column indices) for each non-blank data row of a CSV."""
    with _open(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise TraceError(path, 1, "empty file: no header")
            names = [h.strip() for h in header]
            missing = [c for c in columns if c not in names]
            if missing:
                raise TraceError(path, 1, f"header lacks column(s) {', '.join(missing)}; found {','.join(names)}")
            col = tuple(names.index(c) for c in columns)
            width = max(col) + 1
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) < width:
                    raise TraceError(
                        path, reader.line_num, f"expected {len(names)} columns ({','.join(names)}), found {len(row)}"
                    )
                yield reader.line_num, row, col
        except UnicodeDecodeError:
            raise TraceError(path, reader.line_num + 1, "not UTF-8 text") from None
        except csv.Error as exc:
            raise TraceError(path, reader.line_num, f"malformed CSV: {exc}") from None


def _tokens(path: Path, line_no: int, column: str, raw: object) -> int:
    """A token count: a non-negative integer (0 read as 1)."""
    if isinstance(raw, bool):
        raise TraceError(path, line_no, f"{column} {raw!r} is not an integer token count")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            raise TraceError(path, line_no, f"{column} {raw.strip()!r} is not an integer token count") from None
    else:
        raise TraceError(path, line_no, f"{column} {raw!r} is not an integer token count")
    if value < 0:
        raise TraceError(path, line_no, f"{column} is negative ({value})")
    return max(value, 1)


def _finish(path: Path, kind: str, t: list[float], isl: list[int], osl: list[int]) -> Workload:
    if not t:
        raise TraceError(path, None, "no requests in the trace")
    span_s = max(t) - min(t)
    return make_workload(
        path.stem, t, isl, osl, description=f"{kind} {path.name}: {len(t)} requests over {span_s:.0f}s"
    )
