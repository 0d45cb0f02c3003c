"""`tokenscale fit`: fit a performance profile (prefill and decode coefficients) to measured points.

Called by `tokenscale.cli.build_parser`. Three steps, each its own function: `read_points` parses the
CSV, `fit_profile` fits the planner's models (`planner.perf`) and `write_profile` prints or writes the
PerformanceProfile. `tokenscale profile` measures its points and then fits and writes them the same way.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TypeAlias

import numpy as np
import yaml

from tokenscale.api import DecodeProfile, PerformanceProfile, PrefillProfile
from tokenscale.cli.errors import EXIT_OK, Subparsers, UsageError
from tokenscale.cli.flags import output_flag
from tokenscale.planner import perf

# The columns each phase's rows need, the measured seconds last.
PHASE_COLUMNS = {"prefill": ("isl_tokens", "seconds"), "decode": ("batch", "context_tokens", "seconds")}

# Measured points per phase: one row of PHASE_COLUMNS values per measurement.
Points: TypeAlias = dict[str, list[list[float]]]

DESCRIPTION = """\
Least-squares fit (non-negative coefficients) of the planner's performance models to measured points:
  prefill  s(ISL)   = a + b·ISL + c·ISL²      seconds to prefill one prompt of ISL tokens
  decode   τ(n, L)  = α + β·n + γ·n·L         seconds of one decode step of n sequences, mean context L

POINTS is a CSV file with a header line; one row per measurement, '#' lines ignored:
  phase,isl_tokens,batch,context_tokens,seconds
  prefill,512,,,0.081                 prefill rows: isl_tokens, seconds (≥ 3 prompt lengths)
  decode,,32,1500,0.0265              decode rows: batch, context_tokens (prompt + tokens generated
                                      so far, mean over the batch), seconds per step (several
                                      batches and contexts)
Either phase may be left out; the pool then takes that phase from the roofline prior.

Writes a PerformanceProfile (YAML) to put under pools.<role>.performance.profile, or with
--configmap a ConfigMap (key profile.yaml) for pools.<role>.performance.configMapRef. Fit quality
(points, R², max relative error, RMSE) goes to stderr."""


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a performance profile (prefill and decode coefficients) to measured points",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
    )
    p.add_argument("points", help="CSV of measured points (format above)")
    profile_output_flags(p)
    p.set_defaults(func=run)


def profile_output_flags(p: argparse.ArgumentParser) -> None:
    """`fit` and `profile` print the profile as YAML or JSON, or write it to --output-file (or as a ConfigMap)."""
    output_flag(p, ("yaml", "json"))
    p.add_argument("--output-file", metavar="FILE", help="write the profile to FILE instead of stdout")
    p.add_argument(
        "--kv-capacity-tokens", type=int, metavar="TOKENS", help="KV-cache capacity of one replica, in tokens"
    )
    p.add_argument("--configmap", metavar="NAME", help="write a ConfigMap NAME holding the profile instead")


def run(args: argparse.Namespace) -> int:
    """Fit prefill and decode coefficients to the points of a CSV file; write a PerformanceProfile."""
    path = Path(args.points)
    points = read_points(path)
    profile = fit_profile(points, str(path), args.kv_capacity_tokens)
    write_profile(profile, f"fit {path.name}", args.output, args.output_file, args.configmap)
    return EXIT_OK


def read_points(path: Path) -> Points:
    """The measured points of the CSV file at `path`; a UsageError naming the file (and line) of the first problem."""
    points: Points = {"prefill": [], "decode": []}
    header: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                cells = [c.strip() for c in row]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                if not header:
                    header = cells
                    if "phase" not in header:
                        raise UsageError(f"{path}: missing column phase (the header is {','.join(header)})")
                    continue
                phase, values = _parse_row(path, f"{path}:{reader.line_num}", header, cells)
                points[phase].append(values)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a CSV file: {err}") from None
    if not points["prefill"] and not points["decode"]:
        raise UsageError(f"{path}: no points (rows with phase prefill or decode under a header line)")
    return points


def _parse_row(path: Path, where: str, header: list[str], cells: list[str]) -> tuple[str, list[float]]:
    """One data row: its phase and its values in PHASE_COLUMNS order; a UsageError at `where` when it is wrong."""
    record = dict(zip(header, cells, strict=False))
    phase = record.get("phase", "").lower()
    if phase not in PHASE_COLUMNS:
        raise UsageError(f"{where}: phase must be prefill or decode, got {record.get('phase', '')!r}")
    needs = PHASE_COLUMNS[phase]
    values = []
    for name in needs:
        if name not in header:
            raise UsageError(f"{path}: missing column {name} ({phase} rows need {', '.join(needs)})")
        text = record.get(name, "")
        if not text:
            raise UsageError(f"{where}: {name} is empty ({phase} rows need {', '.join(needs)})")
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{where}: {name} {text!r} is not a number") from None
        if not np.isfinite(value) or value < 0:
            raise UsageError(f"{where}: {name} must be a finite number ≥ 0, got {text}")
        values.append(value)
    if values[-1] == 0:
        raise UsageError(f"{where}: seconds must be > 0")
    if phase == "decode" and values[0] < 1:
        raise UsageError(f"{where}: batch must be ≥ 1, got {values[0]:g}")
    return phase, values


def fit_profile(points: Points, source: str, kv_capacity_tokens: int | None) -> PerformanceProfile:
    """The profile fitted to the measured points (`fit` reads them from a CSV, `profile` measures them).

    Each phase's fit quality goes to stderr; a phase without points is left to the roofline prior.
    """
    if kv_capacity_tokens is not None and kv_capacity_tokens < 1:
        raise UsageError(f"--kv-capacity-tokens: must be ≥ 1, got {kv_capacity_tokens}")
    prefill = decode = None
    if points["prefill"]:
        a, b, c = _fit_phase(source, "prefill", list(np.array(points["prefill"]).T))
        prefill = PrefillProfile(a_seconds=a, b_seconds_per_token=b, c_seconds_per_token2=c)
    if points["decode"]:
        alpha, beta, gamma = _fit_phase(source, "decode", list(np.array(points["decode"]).T))
        decode = DecodeProfile(alpha_seconds=alpha, beta_seconds=beta, gamma_seconds_per_token=gamma)
    return PerformanceProfile(prefill=prefill, decode=decode, kv_capacity_tokens=kv_capacity_tokens)


def _fit_phase(source: str, phase: str, columns: list[perf.FloatArray]) -> list[float]:
    """Coefficients of one phase's fit (6 significant digits); its quality goes to stderr."""
    *inputs, seconds = columns
    try:
        if phase == "prefill":
            pm, quality = perf.fit_prefill(inputs[0], seconds)
            coefficients, predicted = [pm.a_s, pm.b_s_per_token, pm.c_s_per_token2], pm.service_time_s(inputs[0])
        else:
            dm, quality = perf.fit_decode(inputs[0], inputs[1], seconds)
            coefficients, predicted = [dm.alpha_s, dm.beta_s, dm.gamma_s_per_token], dm.step_time_s(*inputs)
    except ValueError as err:
        raise UsageError(f"{source}: {phase}: {err}") from None
    if coefficients[1] == 0 and coefficients[2] == 0:
        grows = "prompt length" if phase == "prefill" else "batch size or context"
        raise UsageError(f"{source}: {phase}: the fitted time does not grow with {grows}; check the points")
    worst = float(np.max(np.abs(np.asarray(predicted) - seconds) / seconds))
    print(
        f"{phase}: {quality.points} points, R² {quality.r2:.4f}, max relative error {worst:.1%}, "
        f"RMSE {quality.rmse_s * 1000:.3g} ms",
        file=sys.stderr,
    )
    return [float(f"{c:.6g}") for c in coefficients]


def write_profile(
    profile: PerformanceProfile, title: str, output: str, output_file: str | None, configmap: str | None
) -> None:
    """Print the profile (YAML, or JSON with `-o json`) or write it to `output_file`; a ConfigMap with `configmap`."""
    body = yaml.safe_dump(profile.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
    if configmap:
        manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": configmap}}
        block = "".join("    " + line for line in body.splitlines(keepends=True))
        text = yaml.safe_dump(manifest, sort_keys=False) + "data:\n  profile.yaml: |\n" + block
    else:
        text = f"# tokenscale {title}: use under pools.<role>.performance.profile\n{body}"
    if output == "json":
        text = json.dumps(yaml.safe_load(text.split("\n", 1)[1] if text.startswith("#") else text), indent=2) + "\n"
    if output_file:
        try:
            Path(output_file).write_text(text, encoding="utf-8")
        except OSError as err:
            raise UsageError(f"--output-file: cannot write {output_file}: {err.strerror or err}") from None
    else:
        sys.stdout.write(text)
