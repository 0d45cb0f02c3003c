"""Trace readers: the real Azure trace, format detection, and clear errors on malformed files (sim/traces.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenscale.sim.traces import TraceError, detect_format, read_trace

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURE_CONV = REPO_ROOT.parent / "shared" / "traces" / "azure-2023-conv.csv"


def test_real_azure_conversation_trace() -> None:
    w = read_trace(AZURE_CONV)
    assert w.n_requests == 19_366
    assert w.arrival_s[0] == 0.0
    # First rows: 18:15:46.6805900, 18:15:50.9951690, 18:15:51.2224670 (seven fractional digits).
    np.testing.assert_allclose(w.arrival_s[1:3], [4.314579, 4.541877], atol=1e-9)
    assert 3400.0 < w.duration_s < 3600.0  # one hour of trace
    assert w.isl_tokens[:4].tolist() == [374, 396, 879, 91]
    assert w.osl_tokens[:4].tolist() == [44, 109, 55, 16]
    assert w.isl_tokens.mean() == pytest.approx(1154.70, abs=0.01)
    assert w.osl_tokens.mean() == pytest.approx(211.13, abs=0.01)
    assert "19366 requests" in w.description


@pytest.mark.parametrize(
    ("name", "text", "fmt", "arrival", "isl", "osl"),
    [
        pytest.param(
            "t.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n"
            "2023-11-16 23:59:59.9999999,10,2\n2023-11-17 00:00:00.0000001,20,0\n",
            "azure",
            [0.0, 2e-7],
            [10, 20],
            [2, 1],
            id="azure-midnight-7-digits-zero-osl-is-1",
        ),
        pytest.param(
            "t.csv",
            "ContextTokens,TIMESTAMP,GeneratedTokens\n5,2024-05-10 10:00:01,3\n7,2024-05-10 10:00:00.5,4\n",
            "azure",
            [0.0, 0.5],
            [7, 5],
            [4, 3],
            id="azure-reordered-columns-unsorted-rows",
        ),
        pytest.param(
            "t.jsonl",
            '{"timestamp": 1000, "input_length": 100, "output_length": 5, "hash_ids": [1, 2]}\n\n'
            '{"timestamp": 3500, "input_length": 200, "output_length": 6}\n',
            "mooncake",
            [0.0, 2.5],
            [100, 200],
            [5, 6],
            id="mooncake-ms-blank-line",
        ),
        pytest.param(
            "t.csv", "t_s,isl,osl\n10.5,100,20\n12,50,1\n", "plain", [0.0, 1.5], [100, 50], [20, 1], id="plain-csv"
        ),
        pytest.param("trace.txt", "t_s,isl,osl\n0,1,1\n", "plain", [0.0], [1], [1], id="plain-by-header-any-extension"),
    ],
)
def test_formats(
    tmp_path: Path, name: str, text: str, fmt: str, arrival: list[float], isl: list[int], osl: list[int]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert detect_format(path) == fmt
    w = read_trace(path)
    np.testing.assert_allclose(w.arrival_s, arrival, atol=1e-9)
    assert w.isl_tokens.tolist() == isl
    assert w.osl_tokens.tolist() == osl
    assert w.name == path.stem


AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        pytest.param(
            "a.csv", AZ + "2023-11-16 18:15:47.1,abc,3\n", 3, "ContextTokens 'abc' is not an integer", id="bad-number"
        ),
        pytest.param(
            "a.csv",
            AZ + "2023-11-16 18:15:47.1,12.5,3\n",
            3,
            "ContextTokens '12.5' is not an integer",
            id="fractional-tokens",
        ),
        pytest.param(
            "a.csv", AZ + "2023-11-16 18:15:47.1,10,-4\n", 3, "GeneratedTokens is negative", id="negative-length"
        ),
        pytest.param(
            "a.csv",
            AZ + AZ.splitlines()[1] + "\n2023-11-16 18:15:48.0,10\n",
            4,
            "expected 3 columns",
            id="missing-column",
        ),
        pytest.param(
            "a.csv", AZ + "16/11/2023 18:15:47,10,4\n", 3, "TIMESTAMP '16/11/2023 18:15:47' is not", id="bad-timestamp"
        ),
        pytest.param("a.csv", AZ + "2023-02-30 18:15:47,10,4\n", 3, "day is out of range", id="impossible-date"),
        pytest.param("a.csv", AZ + "2023-11-16 25:15:47,10,4\n", 3, "out-of-range time of day", id="impossible-hour"),
        pytest.param(
            "a.csv",
            "TIMESTAMP,ContextTokens\n2023-11-16 18:15:47,10\n",
            1,
            "lacks column(s) GeneratedTokens",
            id="header-missing-column",
        ),
        pytest.param("a.csv", "time,prompt,output\n1,2,3\n", 1, "unrecognized header", id="unknown-header"),
        pytest.param("a.csv", "", 1, "unrecognized header", id="empty-file"),
        pytest.param("a.csv", "t_s,isl,osl\n", None, "no requests", id="header-only"),
        pytest.param("a.csv", "t_s,isl,osl\n1,2,3\nnan,2,3\n", 3, "not finite", id="nan-time"),
        pytest.param("a.csv", "t_s,isl,osl\n1,2,3\nsoon,2,3\n", 3, "t_s 'soon' is not a number", id="plain-bad-time"),
        pytest.param(
            "a.jsonl",
            '{"timestamp": 1, "input_length": 2, "output_length": 3}\n{"timestamp": 2,\n',
            2,
            "invalid JSON",
            id="json-broken",
        ),
        pytest.param(
            "a.jsonl", '{"timestamp": 1, "input_length": 2}\n', 1, "missing key(s) output_length", id="json-missing-key"
        ),
        pytest.param(
            "a.jsonl",
            '{"timestamp": "x", "input_length": 2, "output_length": 3}\n',
            1,
            "timestamp 'x'",
            id="json-bad-time",
        ),
        pytest.param(
            "a.jsonl",
            '{"timestamp": 1, "input_length": -2, "output_length": 3}\n',
            1,
            "input_length is negative",
            id="json-negative",
        ),
        pytest.param("a.jsonl", "[1, 2, 3]\n", 1, "expected a JSON object", id="json-not-object"),
    ],
)
def test_malformed_trace_names_file_and_line(
    tmp_path: Path, name: str, text: str, line: int | None, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    err = caught.value
    assert err.line == line
    assert problem in err.problem
    where = f"{path}:{line}" if line is not None else f"{path}:"
    assert str(err).startswith(where)


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot open"):
        read_trace(tmp_path / "absent.csv")
