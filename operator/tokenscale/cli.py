"""The `tokenscale` command line: `crds`, `validate` (and, as they land, `plan`, `simulate`, `fit`, `run`).

Every command turns bad input into one line on stderr naming the file and field, and exit status 2;
no traceback reaches the user for a mistake in their input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from tokenscale import crd, manifests, report
from tokenscale.api import Role, parse_duration_s
from tokenscale.planner import plan as plan_mod
from tokenscale.planner import profiles
from tokenscale.planner.perf import DecodeModel, ReplicaPerformance
from tokenscale.sim import report as sim_report
from tokenscale.sim.policies import POLICY_NAMES

EXIT_OK = 0
EXIT_INVALID = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _cmd_crds(args: argparse.Namespace) -> int:
    sys.stdout.write(crd.crd_yaml())
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.file:
        try:
            pools = manifests.load_pools(Path(path))
        except manifests.ManifestError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        for loaded in pools:
            spec = loaded.pool.spec
            roles = ", ".join(spec.active_pools())
            print(f"{loaded.source}: InferencePool {loaded.name} is valid ({spec.mode}: {roles})")
    return EXIT_INVALID if failed else EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    loaded = manifests.load_one_pool(Path(args.file))
    spec = loaded.pool.spec
    observation = manifests.load_observation(Path(args.observation))
    performance = profiles.resolve_all(spec)
    decision = plan_mod.plan(spec, observation, plan_mod.PlannerState(), observation.time_s, performance)
    if args.output == "json":
        print(json.dumps(report.decision_json(decision), indent=2))
    else:
        Console(width=max(100, Console().width)).print(report.decision_table(loaded.name, spec, decision))
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from tokenscale.sim import loop, traces, workload

    loaded = manifests.load_one_pool(Path(args.file))
    spec = loaded.pool.spec
    prior = profiles.resolve_all(spec)
    truth = simulated_truth(prior, args.perf_error)
    rng = np.random.default_rng(args.seed)
    if args.trace:
        try:
            w = traces.read_trace(Path(args.trace))
        except (traces.TraceError, OSError) as err:
            raise UsageError(str(err)) from None
    else:
        w = workload.default_synthetic_workload(args.seed)
    if args.speedup != 1.0:
        w = workload.speedup(w, args.speedup)
    if args.rate_scale != 1.0:
        w = workload.rate_scale(w, args.rate_scale, rng)
    if w.n_requests == 0:
        raise UsageError("the workload has no requests")
    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise UsageError(f"unknown policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICY_NAMES)}")
    cold_start_s = spec.forecast.cold_start.seconds if args.cold_start is None else parse_duration_s(args.cold_start)
    setup = loop.SimSetup(spec, w, prior, truth, cold_start_s, cold_start_s * 0.1, args.seed)
    runs = []
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as bar:
        for policy in loop.build_policies(setup, names):
            task = bar.add_task(f"{policy.name:>10}", total=w.duration_s)

            def advance(dt: float, task: TaskID = task) -> None:
                bar.advance(task, dt)

            runs.append(loop.run_policy(setup, policy, loop.window_for(policy, spec), advance))
    described = {
        "name": w.name,
        "source": args.trace or "synthetic",
        "requests": w.n_requests,
        "duration_s": w.duration_s,
        "mean_rate_per_s": w.mean_rate_per_s,
        "isl_mean_tokens": float(w.isl_tokens.mean()),
        "osl_mean_tokens": float(w.osl_tokens.mean()),
        "speedup": args.speedup,
        "rate_scale": args.rate_scale,
        "cold_start_s": cold_start_s,
        "decode_slower_than_prior": args.perf_error,
        "seed": args.seed,
    }
    title = f"{loaded.name}: {w.name}"
    out = Path(args.out)
    summary = sim_report.write_all(out, described, spec.objectives, runs, title, requests_csv=args.requests_csv)
    scores = {r.policy: sim_report.score(r, spec.objectives) for r in runs}
    table = Table(title=title, caption=f"summary.json, report.md and plot.png in {out}/", caption_justify="left")
    for column in sim_report.TABLE_COLUMNS:
        table.add_column(column)
    for row in sim_report.table_rows(scores):
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)
    assert summary["policies"]
    return EXIT_OK


def simulated_truth(prior: dict[Role, ReplicaPerformance], decode_error: float) -> dict[Role, ReplicaPerformance]:
    """The simulated fleet's real speed: decode `decode_error` slower than the planner's prior."""
    factor = 1.0 + decode_error
    return {
        role: replace(
            p,
            decode=DecodeModel(
                p.decode.alpha_s * factor, p.decode.beta_s * factor, p.decode.gamma_s_per_token * factor
            ),
        )
        for role, p in prior.items()
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenscale",
        description="SLO-aware autoscaler for LLM inference: size prefill and decode pools to TTFT/TPOT objectives.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crds", help="print the InferencePool CRD (YAML) generated from the API models")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("validate", help="check InferencePool manifests the way the API server and operator will")
    p.add_argument("-f", "--file", action="append", required=True, help="manifest file (repeatable)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("plan", help="dry-run one planning decision for a pool over a recorded observation")
    p.add_argument("-f", "--file", required=True, help="InferencePool manifest")
    p.add_argument("--observation", required=True, help="recorded observation (YAML; see docs/observation.md)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser(
        "simulate", help="replay a workload through a simulated GPU fleet under several scaling policies"
    )
    p.add_argument("-f", "--file", required=True, help="InferencePool manifest")
    p.add_argument("--trace", help="Azure CSV, Mooncake JSONL or plain t_s,isl,osl CSV (default: synthetic)")
    p.add_argument("--workload", choices=("synthetic",), default="synthetic", help="built-in workload")
    p.add_argument("--policy", default=",".join(POLICY_NAMES), help="comma-separated: " + ", ".join(POLICY_NAMES))
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply the arrival rate")
    p.add_argument("--speedup", type=float, default=1.0, help="compress time by this factor")
    p.add_argument("--cold-start", help="replica cold start, e.g. 180s (default: spec.forecast.coldStart)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--perf-error",
        type=float,
        default=0.25,
        help="how much slower the simulated decode is than the planner's prior (0.25 = 25%%)",
    )
    p.add_argument("--out", default="simulate-out", help="directory for summary.json, report.md, plot.png")
    p.add_argument("--requests-csv", action="store_true", help="also write per-request requests.csv")
    p.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UsageError, manifests.ManifestError, profiles.ProfileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
