"""The command line's conventions (issue 14): `--version`, shell completion, `-o json|yaml|table` on
every command that prints a result with output files behind their own flags, `-f -` for stdin,
tables that fit the terminal, one error format and one JSON key style. Run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import OBSERVATION  # the recorded observation test_cli.py plans over

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vllm-disaggregated-70b.yaml"
POINTS = """\
phase,isl_tokens,batch,context_tokens,seconds
prefill,512,,,0.081
prefill,2048,,,0.290
prefill,8192,,,1.41
decode,,8,1000,0.0131
decode,,8,6000,0.0146
decode,,64,3000,0.0240
decode,,128,2000,0.0290
"""
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        input=stdin,
        env={**os.environ, **(env or {})},
    )


def keys(value: Any) -> Iterator[str]:
    """Every mapping key in a JSON value, recursively; the keys under `replicas`/`max_replicas` and
    the like are role names (data, not style), and `policies`/`references` keys are policy names."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            if k not in ("policies", "references"):
                yield from keys(v)
            else:
                for inner in v.values():
                    yield from keys(inner)
    elif isinstance(value, list):
        for item in value:
            yield from keys(item)


def test_version_prints_the_installed_version() -> None:
    import importlib.metadata

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tokenscale {importlib.metadata.version('tokenscale')}"


def complete(script: Path, line: str) -> list[str]:
    """What bash completes for `line` (the cursor at its end) with the generated script loaded."""
    words = line.split(" ")
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_tokenscale\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completion_completes_commands_flags_and_choices(tmp_path: Path) -> None:
    result = run("completion", "bash")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "tokenscale.bash"
    script.write_text(result.stdout)
    assert set(complete(script, "tokenscale ")) >= {"plan", "simulate", "validate", "completion", "--version"}
    assert complete(script, "tokenscale si") == ["simulate"]
    assert "--trace" in complete(script, "tokenscale simulate --tr")
    assert sorted(complete(script, "tokenscale plan -o ")) == ["json", "table", "yaml"]
    assert complete(script, "tokenscale fit -o j") == ["json"]
    assert complete(script, "tokenscale validate -f exa") == ["examples"]  # a file flag completes paths


def test_zsh_completion_loads_the_same_function_through_bashcompinit() -> None:
    result = run("completion", "zsh")
    assert result.returncode == 0
    assert "bashcompinit" in result.stdout and "complete -o filenames -F _tokenscale tokenscale" in result.stdout


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_plan_prints_json_and_yaml_with_the_same_content(tmp_path: Path, fmt: str) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION)
    result = run("plan", "-f", str(EXAMPLE), "--observation", str(obs), "-o", fmt)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    reference = json.loads(run("plan", "-f", str(EXAMPLE), "--observation", str(obs), "-o", "json").stdout)
    assert parsed == reference
    assert all(SNAKE.match(k) for k in keys(parsed) if k not in ("prefill", "decode")), sorted(set(keys(parsed)))


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_validate_prints_one_record_per_pool(fmt: str) -> None:
    result = run("validate", "-f", str(EXAMPLE), "-o", fmt)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    assert parsed == [
        {"file": str(EXAMPLE), "name": "llama-70b", "valid": True, "mode": "Disaggregated",
         "pools": ["prefill", "decode"]}
    ]  # fmt: skip


def test_crds_prints_json_too() -> None:
    result = run("crds", "-o", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == yaml.safe_load(
        (ROOT / "crds" / "tokenscale.dev_inferencepools.yaml").read_text()
    )


def test_fit_prints_the_profile_in_a_format_and_writes_a_file_only_with_output_file(tmp_path: Path) -> None:
    points = tmp_path / "points.csv"
    points.write_text(POINTS)
    as_json = run("fit", str(points), "-o", "json")
    as_yaml = run("fit", str(points))
    assert as_json.returncode == 0 and as_yaml.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == yaml.safe_load(as_yaml.stdout)
    assert set(json.loads(as_json.stdout)) == {"prefill", "decode"}
    out = tmp_path / "profile.yaml"
    written = run("fit", str(points), "--output-file", str(out))
    assert written.returncode == 0 and written.stdout == ""
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(as_yaml.stdout)
    # -o is a format everywhere: a file name there is refused in one line, nothing written.
    refused = run("fit", str(points), "-o", str(tmp_path / "p.yaml"))
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_dash_reads_the_manifest_and_the_observation_from_stdin(tmp_path: Path) -> None:
    result = run("validate", "-f", "-", stdin=EXAMPLE.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "<stdin>: InferencePool llama-70b is valid (Disaggregated: prefill, decode)"
    pool = tmp_path / "pool.yaml"
    pool.write_text(EXAMPLE.read_text())
    planned = run("plan", "-f", str(pool), "--observation", "-", "-o", "json", stdin=OBSERVATION)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["prefill"]["replicas"] > 1
    broken = run("validate", "-f", "-", stdin=EXAMPLE.read_text().replace("maxReplicas: 8", "maxReplicas: eight"))
    assert broken.returncode == 2
    line = EXAMPLE.read_text().splitlines().index("      maxReplicas: 8") + 1
    where = f"error: <stdin>:{line}: InferencePool llama-70b: spec.pools.prefill.maxReplicas"
    assert broken.stderr.startswith(where), broken.stderr
    twice = run("plan", "-f", "-", "--observation", "-", stdin=OBSERVATION)
    assert twice.stderr == "error: -f, --observation: only one input can be read from stdin (-)\n"


@pytest.mark.parametrize("columns", [60, 100])
def test_tables_fit_the_terminal_width(tmp_path: Path, columns: int) -> None:
    obs = tmp_path / "obs.yaml"
    obs.write_text(OBSERVATION)
    result = run("plan", "-f", str(EXAMPLE), "--observation", str(obs), env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, "\n" + result.stdout
    assert re.search(r"^prefill\s+1", result.stdout, re.M), result.stdout
    # Without a terminal or $COLUMNS, nothing is wrapped: one line per row.
    wide = run("plan", "-f", str(EXAMPLE), "--observation", str(obs), env={"COLUMNS": ""})
    assert len([line for line in wide.stdout.splitlines() if re.match(r"prefill\s+1 → \d+\s+\d+", line)]) == 1
    assert max(len(line) for line in wide.stdout.splitlines()) > 100


@pytest.mark.parametrize(
    ("args", "where"),
    [
        pytest.param(["plan", "-f", str(EXAMPLE)], "--observation, --prometheus: ", id="flag-combination"),
        pytest.param(["simulate", "-f", str(EXAMPLE), "--seed", "-1"], "--seed: ", id="flag-value"),
        pytest.param(["plan"], "tokenscale plan: the following arguments are required", id="usage"),
        pytest.param(["validate", "-f", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read", id="file"),
        pytest.param(["fit", "/nonexistent.csv"], "/nonexistent.csv: cannot read", id="fit-file"),
    ],
)
def test_every_error_is_one_line_in_one_format(args: list[str], where: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {where}"), result.stderr


def test_simulate_without_the_sim_extra_says_how_to_install_it(tmp_path: Path) -> None:
    # matplotlib made unimportable, as in `pip install tokenscale` without [sim] (the operator image).
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from tokenscale import cli\n"
        f"sys.exit(cli.main(['simulate', '-f', {str(EXAMPLE)!r}, '--out-dir', {str(tmp_path / 'out')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        "error: simulate: the report needs matplotlib, which is not installed: pip install 'tokenscale[sim]'\n"
    )
    assert not (tmp_path / "out").exists()
