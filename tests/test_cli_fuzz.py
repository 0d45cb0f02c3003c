"""Fuzzing the command line's inputs (issue 13): manifests, observations, traces and fit CSVs built
by hypothesis, each mutated from a valid one. Whatever the input, `tokenscale` answers with a result
(exit 0) or one line on stderr naming the file (exit 2): never a traceback, which would mean a bug.

In-process (`cli.main`), so any exception but the user-error ones fails the test with its traceback.
"""

from __future__ import annotations

import io
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenscale import cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vllm-aggregated-8b.yaml"
OBSERVATION = {
    "requestRatePerSecond": 12.0,
    "islMeanTokens": 2000.0,
    "oslMeanTokens": 300.0,
    "arrivalCv2": 1.0,
    "ttftSeconds": 0.4,
    "replicas": {"aggregated": {"current": 2}},
}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Values a careless user, a broken exporter or a hostile file may put anywhere.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "500", "500ms", "-1s", "1e300h", "H900", "fast", "\x00", "é", "[", "{"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["a", "target", "current"]), st.integers(), max_size=2),
)


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _one_line_or_ok(code: int, stderr: str, path: Path) -> None:
    if code == 0:
        return
    assert code == cli.EXIT_INVALID, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert str(path) in lines[0] or lines[0].startswith("error: --"), lines[0]


def _paths(document: object) -> list[list[str | int]]:
    """Every path to a value inside a YAML document (mappings and lists)."""
    found: list[list[str | int]] = []

    def walk(node: object, at: list[str | int]) -> None:
        found.append(at)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, [*at, key])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, [*at, index])

    walk(document, [])
    return found[1:]


def _set(document: object, path: list[str | int], value: object) -> None:
    node = document
    for part in path[:-1]:
        node = node[part]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]


@st.composite
def mutated_pool(draw: st.DrawFn) -> str:
    documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
    pool = next(d for d in documents if d.get("kind") == "InferencePool")
    for _ in range(draw(st.integers(1, 3))):
        # Inside the spec (and the name): a pool without kind or apiVersion is simply not one.
        paths = [p for p in _paths(pool) if (p[0] == "spec" and len(p) >= 2) or p == ["metadata", "name"]]
        path = draw(st.sampled_from(paths))
        if draw(st.booleans()):
            _set(pool, path, draw(ODD_VALUES))
        else:  # delete the key or item
            parent = pool
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
    return str(yaml.safe_dump(pool, allow_unicode=True))


@FUZZ
@given(text=mutated_pool())
def test_fuzzed_manifests_are_valid_or_one_line(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "pool.yaml"
    path.write_text(text)
    code, _, stderr = _run("validate", "-f", str(path))
    _one_line_or_ok(code, stderr, path)
    if code == 0:  # valid means the operator's own steps accept it: plan runs on it
        obs = path.with_name("obs.yaml")
        obs.write_text(yaml.safe_dump({**OBSERVATION, "replicas": {}}))
        code, _, stderr = _run("plan", "-f", str(path), "--observation", str(obs), "-o", "json")
        assert code == 0, stderr


@st.composite
def mutated_observation(draw: st.DrawFn) -> str:
    observation = dict(OBSERVATION)
    for _ in range(draw(st.integers(1, 3))):
        keys = [*OBSERVATION, "waitingRequests", "waitingRequests.prefill", "kvUsageFraction", "timeSeconds"]
        key = draw(st.sampled_from(keys))
        if key == "waitingRequests.prefill":  # a per-pool count, as the field is meant to be written
            observation["waitingRequests"] = {"prefill": draw(ODD_VALUES)}
        else:
            observation[key] = draw(ODD_VALUES)
    return str(yaml.safe_dump(observation, allow_unicode=True))


@FUZZ
@given(text=mutated_observation())
def test_fuzzed_observations_plan_or_one_line(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "obs.yaml"
    path.write_text(text)
    code, stdout, stderr = _run("plan", "-f", str(EXAMPLE), "--observation", str(path), "-o", "json")
    _one_line_or_ok(code, stderr, path)
    if code == 0:
        assert stderr == "" and '"held"' in stdout


CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["", "x", "1e400", "-0", " 5 ", '"', "\x00"]),
)


Rows = list[tuple[str, ...]]


PLAIN = st.floats(min_value=0.0, max_value=5000.0).map(lambda x: f"{x:g}")
TRACE_CELL = st.one_of(PLAIN, PLAIN, PLAIN, CELL)  # mostly readable, so the later checks run too


@FUZZ
@given(rows=st.lists(st.tuples(TRACE_CELL, TRACE_CELL, TRACE_CELL), min_size=0, max_size=6))
def test_fuzzed_traces_simulate_or_one_line(tmp_path_factory: pytest.TempPathFactory, rows: Rows) -> None:
    where = tmp_path_factory.mktemp("fuzz")
    path = where / "trace.csv"
    path.write_text("t_s,isl,osl\n" + "".join(",".join(r) + "\n" for r in rows))
    # The trace is read and checked; then --out, a file, stops it before a whole replay would start.
    taken = where / "taken"
    taken.write_text("")
    code, _, stderr = _run("simulate", "-f", str(EXAMPLE), "--trace", str(path), "--out", str(taken))
    _one_line_or_ok(code, stderr, path)
    assert code == cli.EXIT_INVALID


@FUZZ
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["prefill", "decode", "PREFILL", "x", ""]), CELL, CELL, CELL, CELL),
        min_size=0,
        max_size=8,
    )
)
def test_fuzzed_fit_points_fit_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, ...]]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "points.csv"
    path.write_text("phase,isl_tokens,batch,context_tokens,seconds\n" + "".join(",".join(r) + "\n" for r in rows))
    code, stdout, stderr = _run("fit", str(path))
    # fit reports its quality on stderr when it succeeds, one line per phase
    if code == 0:
        assert stdout and all(math.isfinite(float(v)) for v in _numbers(stdout))
    else:
        _one_line_or_ok(code, stderr, path)


def _numbers(text: str) -> list[str]:
    values = []
    for line in text.splitlines():
        _, _, value = line.partition(":")
        value = value.strip()
        try:
            float(value)
        except ValueError:
            continue
        values.append(value)
    return values
