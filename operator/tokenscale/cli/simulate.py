"""`tokenscale simulate`: replay a workload through a simulated GPU fleet under several scaling
policies and report them side by side, or (`--serve-metrics`) run one fleet in wall-clock time and
serve its engines' metrics for Prometheus.

Called by `tokenscale.cli.build_parser`; `simulated_truth` also by the fidelity tests. The replay is
`sim.loop`'s, the report `sim.report`'s; this module checks the flags, loads the workload and prints.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tokenscale import manifests, tables
from tokenscale.api import InferencePoolSpec, Role
from tokenscale.cli.errors import EXIT_OK, Subparsers, UsageError
from tokenscale.cli.flags import (
    MAX_REPLAYED_REQUESTS,
    MAX_SERVE_RATE_PER_S,
    PERF_ERROR_RANGE,
    SPEEDUP_RANGE,
    duration_flag,
    number_in,
    output_flag,
    port_flag,
    prepare_out_dir,
    remove_empty,
)
from tokenscale.cli.output import print_result
from tokenscale.cli.validate import load_one_pool
from tokenscale.planner import profiles
from tokenscale.planner.perf import DecodeModel, ReplicaPerformance
from tokenscale.sim import report as sim_report
from tokenscale.sim.policies import POLICY_NAMES
from tokenscale.sim.workload import Workload

if TYPE_CHECKING:
    from rich.console import Console

    from tokenscale.sim.loop import SimSetup
    from tokenscale.sim.report import PolicyRun

SIM_EXTRA_HINT = "pip install 'tokenscale[sim]'"


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="replay a workload through a simulated GPU fleet under several scaling policies"
    )
    p.add_argument("-f", "--file", required=True, help="InferencePool manifest (- reads stdin)")
    p.add_argument(
        "--trace",
        metavar="NAME|FILE",
        help="a named public trace, downloaded once into ~/.cache/tokenscale/traces and checksummed "
        "(azure-conv-2023, mooncake-synthetic), or a file: Azure CSV, Mooncake JSONL or plain t_s,isl,osl CSV "
        "(default: the synthetic workload)",
    )
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
    p.add_argument(
        "--out-dir",
        "--out",
        dest="out",
        default="simulate-out",
        metavar="DIR",
        help="directory for summary.json, report.md, plot.png, fidelity.png (default simulate-out)",
    )
    output_flag(p, help_extra="; json and yaml print summary.json")
    p.add_argument("--requests-csv", action="store_true", help="also write per-request requests.csv")
    p.add_argument(
        "--serve-metrics",
        type=int,
        metavar="PORT",
        help="instead of a report: run one fleet in wall-clock time and serve engine metrics on PORT for Prometheus",
    )
    p.add_argument("--rate", type=float, help="with --serve-metrics: arrivals per simulated second")
    p.add_argument("--host", default="127.0.0.1", help="with --serve-metrics: address to listen on")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_one_pool(args.file)
    spec = loaded.pool.spec
    number_in("--perf-error", args.perf_error, *PERF_ERROR_RANGE)
    number_in("--speedup", args.speedup, *SPEEDUP_RANGE)
    if args.seed < 0:
        raise UsageError(f"--seed: must be ≥ 0, got {args.seed}")
    cold_start_s = duration_flag("--cold-start", args.cold_start, spec.forecast.cold_start.seconds)
    prior = profiles.resolve_all(spec)
    truth = simulated_truth(prior, args.perf_error)
    if args.serve_metrics is not None:
        return _serve_metrics(args, spec, prior, truth, cold_start_s)
    _need_sim_extra()
    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise UsageError(
            f"--policy: unknown policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICY_NAMES)}"
        )
    number_in("--rate-scale", args.rate_scale, 0.0, math.inf, low_open=True)
    w, origin = _load_workload(args)
    out = Path(args.out)
    created = prepare_out_dir("--out-dir", out)
    try:
        return _simulate_and_report(args, loaded, spec, prior, truth, w, names, cold_start_s, out, origin)
    except BaseException:
        remove_empty(created)
        raise


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


def _load_workload(args: argparse.Namespace) -> tuple[Workload, dict[str, str]]:
    """The workload to replay (`--trace` or the synthetic one), after `--speedup` and `--rate-scale`; its origin."""
    from tokenscale.sim import traces, workload

    rng = np.random.default_rng(args.seed)
    origin: dict[str, str] = {"source": args.trace or "synthetic"}
    if args.trace:
        path, origin = _resolve_trace(args.trace)
        try:
            w = traces.read_trace(path)
        except traces.TraceError as err:
            raise UsageError(str(err)) from None
    else:
        w = workload.default_synthetic_workload(args.seed)
    source = args.trace or "the synthetic workload"
    if w.n_requests * args.rate_scale > MAX_REPLAYED_REQUESTS:
        raise UsageError(
            f"--rate-scale: {args.rate_scale:g} × {w.n_requests} requests would replay more than "
            f"{MAX_REPLAYED_REQUESTS:,} requests"
        )
    if w.n_requests < 2 or w.duration_s <= 0:
        raise UsageError(
            f"{source}: {w.n_requests} request(s) over {w.duration_s:g} s; a replay needs at least two "
            "requests at different times"
        )
    if args.speedup != 1.0:
        w = workload.speedup(w, args.speedup)
    if args.rate_scale != 1.0:
        w = workload.rate_scale(w, args.rate_scale, rng)
        if w.n_requests < 2:
            raise UsageError(f"--rate-scale: {args.rate_scale:g} leaves {w.n_requests} request(s) of {source}")
    return w, origin


def _resolve_trace(text: str) -> tuple[Path, dict[str, str]]:
    """`--trace`: a local file, else a named public trace fetched into the user cache; where it came from."""
    from tokenscale import public_traces

    path = Path(text)
    if path.exists() or text not in public_traces.CATALOG:
        if not path.exists() and "/" not in text and "." not in text:
            raise UsageError(
                f"--trace: {text} is neither a file nor a named trace ({', '.join(public_traces.CATALOG)})"
            )
        return path, {"source": text}
    try:
        fetched = public_traces.fetch(
            text,
            public_traces.cache_dir(os.environ),
            os.environ.get(public_traces.BASE_URL_ENV) or None,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except public_traces.TraceFetchError as err:
        raise UsageError(f"--trace {text}: {err}") from None
    print(fetched.provenance(), file=sys.stderr, flush=True)
    origin = {"source": text, "source_url": fetched.source_url, "license": fetched.trace.license}
    return fetched.path, {**origin, "citation": fetched.trace.citation}


def _need_sim_extra() -> None:
    """The report needs the simulator's extra (matplotlib, rich); say so in one line when it is missing."""
    try:
        import matplotlib  # noqa: F401
        import rich  # noqa: F401
    except ImportError as err:
        raise UsageError(
            f"simulate: the report needs {err.name or 'the simulator extra'}, which is not installed: {SIM_EXTRA_HINT}"
        ) from None


def _simulate_and_report(
    args: argparse.Namespace,
    loaded: manifests.LoadedPool,
    spec: InferencePoolSpec,
    prior: dict[Role, ReplicaPerformance],
    truth: dict[Role, ReplicaPerformance],
    w: Workload,
    names: list[str],
    cold_start_s: float,
    out: Path,
    origin: dict[str, str],
) -> int:
    """Replay `w` under each policy and the references, write the report into `out` and print the table."""
    from rich.console import Console

    from tokenscale.sim import fidelity, loop, references

    setup = loop.SimSetup(spec, w, prior, truth, cold_start_s, cold_start_s * 0.1, args.seed)
    setup = replace(setup, initial=references.warm_start(setup))
    console = Console(stderr=True)
    runs = _run_policies(setup, names, console)
    console.print("searching fleets with the simulator for the references (best-static, clairvoyant)…")
    static_ref = references.best_static(setup)
    clairvoyant = references.clairvoyant(setup)
    refs = (static_ref, clairvoyant, references.clairvoyant_late(setup, clairvoyant))
    model_check = fidelity.measure(setup, static_ref.counts[0])
    described = {
        "name": w.name,
        **origin,
        "requests": w.n_requests,
        "duration_s": w.duration_s,
        "mean_rate_per_s": w.mean_rate_per_s,
        "isl_mean_tokens": float(w.isl_tokens.mean()),
        "osl_mean_tokens": float(w.osl_tokens.mean()),
        "speedup": args.speedup,
        "rate_scale": args.rate_scale,
    }
    conditions = {
        "cold_start_s": cold_start_s,
        "cold_start_jitter_s": setup.cold_start_jitter_s,
        "decode_slower_than_prior": args.perf_error,
        "interval_s": spec.interval.seconds,
        "metrics_window_s": spec.metrics.window.seconds,
        "score_window_s": sim_report.WINDOW_S,
        "seed": args.seed,
    }
    title = f"{loaded.name}: {w.name}"
    summary = sim_report.write_all(
        out, described, spec.objectives, runs, title, refs, model_check, args.requests_csv, conditions
    )
    scores = {r.policy: sim_report.score(r, spec.objectives) for r in runs}
    table = tables.Table(
        sim_report.table_columns(spec.objectives),
        title=title,
        caption=f"summary.json, report.md, plot.png and fidelity.png in {out}/",
    )
    for row in sim_report.table_rows(scores, refs):
        table.add_row(*row)
    print_result(args.output, summary, table)
    return EXIT_OK


def _run_policies(setup: SimSetup, names: list[str], console: Console) -> list[PolicyRun]:
    """Replay the setup's workload under each named policy, with a progress bar per policy on stderr."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    from tokenscale.sim import loop

    runs = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as bar:
        for policy in loop.build_policies(setup, names):
            task = bar.add_task(f"{policy.name:>10}", total=setup.workload.duration_s)

            def advance(dt: float, task: TaskID = task) -> None:
                bar.advance(task, dt)

            runs.append(loop.run_policy(setup, policy, loop.window_for(policy, setup.spec), advance))
    return runs


def _serve_metrics(
    args: argparse.Namespace,
    spec: InferencePoolSpec,
    prior: dict[Role, ReplicaPerformance],
    truth: dict[Role, ReplicaPerformance],
    cold_start_s: float,
) -> int:
    """Run one simulated fleet in wall-clock time and serve its engines' metrics until interrupted."""
    import signal
    import threading

    from tokenscale.planner.sizing import Load
    from tokenscale.sim import engine_metrics, exporter, loop, policies, workload

    port_flag("--serve-metrics", args.serve_metrics)
    if args.rate is None:
        raise UsageError("--rate: --serve-metrics needs --rate REQ_PER_S (≥ 0): the arrival rate to simulate")
    number_in("--rate", args.rate, 0.0, MAX_SERVE_RATE_PER_S)
    rng = np.random.default_rng(args.seed)
    isl = float(exporter.DEFAULT_ISL.sample(rng, 20_000).mean())
    osl = float(exporter.DEFAULT_OSL.sample(rng, 20_000).mean())
    counts = policies.size_for(spec, Load(max(args.rate, 1e-3), isl, osl), truth)
    empty = workload.make_workload("live", [], [], [])
    setup = loop.SimSetup(spec, empty, prior, truth, cold_start_s, cold_start_s * 0.1, args.seed)
    config = loop.fleet_config(setup, counts, cold_start=True)
    workers: dict[str, engine_metrics.WorkerEngine] = {"sglang": "sglang", "trtllm": "trtllm"}
    engine = workers.get(spec.metrics.engine, "vllm")  # a Dynamo frontend in front of vLLM workers, or custom
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with exporter.LiveFleet(config, args.rate, speedup=args.speedup, seed=args.seed) as live:
        try:  # the socket is bound here: a port in use is the user's to change, not a traceback
            server = exporter.MetricsServer(
                live, model=spec.model, engine=engine, host=args.host, port=args.serve_metrics
            )
        except OSError as err:
            raise UsageError(
                f"--serve-metrics: cannot listen on {args.host}:{args.serve_metrics}: {err.strerror or err}"
            ) from None
        with server as srv:
            print(f"simulated {spec.mode} fleet of {spec.model}: {args.rate:g} req/s, {args.speedup:g}× speed, "
                  f"replicas {counts}", flush=True)  # fmt: skip
            for role in (*live.roles, "frontend"):
                print(f"  {srv.url}/metrics/{role}", flush=True)
            print(f"  POST {srv.url}/control {{\"rate_per_s\": R, \"replicas\": {{ROLE: N}}}}; GET {srv.url}/truth",
                  flush=True)  # fmt: skip
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
    return EXIT_OK
