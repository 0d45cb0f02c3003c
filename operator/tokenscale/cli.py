"""The `tokenscale` command line: `crds`, `validate`, `plan`, `simulate`, `fit`, `profile`, `run`, `completion`.

Every command turns bad input into one line on stderr, `error: WHERE: MESSAGE`, where WHERE is
`file:line` (or the file alone, `<stdin>` for `-f -`), a `--flag`, or the command for a usage
error; exit status 2. No traceback reaches the user for a mistake in their input.
Every command that prints a result takes `-o json|yaml|table` (the format; JSON and YAML keys are
snake_case with units in their names); files are written only by flags named for them
(`--output-file`, `--out-dir`, `--points`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import socket
import sys
import tempfile
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import yaml

from tokenscale import completion, crd, manifests, report, tables
from tokenscale.api import InferencePoolSpec, Role, parse_duration_s
from tokenscale.planner import plan as plan_mod
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation, ReplicaCounts
from tokenscale.planner.perf import DecodeModel, ReplicaPerformance
from tokenscale.sim import report as sim_report
from tokenscale.sim.policies import POLICY_NAMES
from tokenscale.sim.workload import Workload

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_PROMETHEUS_UNREADABLE = 3  # `plan --prometheus`: no query answered (unreachable, timeout, HTTP error, garbage)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class PrometheusUnreadable(Exception):
    """`plan --prometheus` could not read Prometheus at all: printed as one line, exit status 3."""


# Bounds on the numeric flags: outside them a run is nonsense (a negative speed) or cannot finish
# (10^308 copies of a trace), so they are refused before any work starts (issue 13).
MAX_REPLAYED_REQUESTS = 20_000_000
SPEEDUP_RANGE = (1e-3, 1e4)
PERF_ERROR_RANGE = (-0.9, 9.0)  # the simulated decode step is (1 + x) × the prior's: 0.1× to 10×
MAX_COLD_START_S = 86_400.0
MAX_SERVE_RATE_PER_S = 1e5


def _number_in(flag: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    """`value` if finite and within [low, high] (or (low, high] when `low_open`), else a UsageError naming the flag."""
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        bracket = "(" if low_open else "["
        where = f"{'>' if low_open else '≥'} {low:g}" if math.isinf(high) else f"in {bracket}{low:g}, {high:g}]"
        raise UsageError(f"{flag}: must be a finite number {where}, got {value:g}")
    return value


def _duration_flag(flag: str, text: str | None, default_s: float) -> float:
    """Seconds in a duration flag such as `--cold-start 180s`; the default when it is not given."""
    if text is None:
        return default_s
    try:
        seconds = parse_duration_s(text)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None
    return _number_in(flag, seconds, 0.0, MAX_COLD_START_S)


def _url_flag(flag: str, text: str) -> str:
    """`text` if it is an http:// or https:// URL with a host (and a valid port), else a UsageError naming the flag."""
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 (parsing the port is the check)
    except ValueError as err:
        raise UsageError(f"{flag}: {text!r} is not a URL: {err}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UsageError(f"{flag}: {text!r} is not an http:// or https:// URL")
    return text


def _port_flag(flag: str, port: int) -> int:
    if not 0 <= port <= 65535:
        raise UsageError(f"{flag}: a TCP port is 0-65535, got {port}")
    return port


def _prepare_out_dir(flag: str, out: Path) -> list[Path]:
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
        _remove_empty(created)
        raise UsageError(f"{flag}: cannot write to {out}: {err.strerror or err}") from None
    return created


def _remove_empty(dirs: Sequence[Path]) -> None:
    """Remove the directories a failed run created, deepest first, while they are empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def _print_result(fmt: str, data: object, table: tables.Table | None = None) -> None:
    """Print a command's result in the `-o` format: JSON, YAML, or the table for people."""
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    elif table is not None:
        sys.stdout.write(tables.render(table, tables.terminal_width()))


def _stdin_once(flag_paths: Sequence[tuple[str, str | None]]) -> None:
    """Standard input can be read once: refuse a second `-` among the file flags."""
    dashes = [flag for flag, path in flag_paths if path == manifests.STDIN]
    if len(dashes) > 1:
        raise UsageError(f"{', '.join(dashes)}: only one input can be read from stdin (-)")


def _cmd_crds(args: argparse.Namespace) -> int:
    if args.output == "json":
        print(json.dumps(yaml.safe_load(crd.crd_yaml()), indent=2))
    else:
        sys.stdout.write(crd.crd_yaml())
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion.script(build_parser(), args.shell))
    return EXIT_OK


def _lookups(loaded: manifests.LoadedPool) -> None:
    """What the operator looks up before planning (GPU and model presets, the replica model): a
    ManifestError naming the line of the first problem."""
    found = profiles.problems(loaded.pool.spec)
    if found:
        where = loaded.where(found[0][0])
        raise manifests.ManifestError(f"{where}: InferencePool {loaded.name}: {'; '.join(m for _, m in found)}")


def _load_one_pool(path: str) -> manifests.LoadedPool:
    loaded = manifests.load_one_pool(Path(path))
    _lookups(loaded)
    return loaded


def _cmd_validate(args: argparse.Namespace) -> int:
    _stdin_once([("-f", path) for path in args.file])
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
                _lookups(loaded)
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
        _print_result(args.output, results)
    return EXIT_OK if all(r["valid"] for r in results) else EXIT_INVALID


def _cmd_plan(args: argparse.Namespace) -> int:
    _stdin_once([("-f", args.file), ("--observation", args.observation)])
    loaded = _load_one_pool(args.file)
    spec = loaded.pool.spec
    if (args.observation is None) == (args.prometheus is None):
        raise UsageError("--observation, --prometheus: give exactly one (a recorded FILE or a live URL)")
    replicas = _parse_replicas(args.replicas, spec) if args.replicas else None
    if args.observation is not None:
        observation = manifests.load_observation(Path(args.observation))
        if replicas is not None:
            observation = replace(observation, replicas=replicas)
    unreadable = None
    if args.prometheus is not None:
        observation, unreadable = _observe_prometheus(spec, args, replicas)
        unknown = [role for role in spec.active_pools() if role not in observation.replicas]
        if unknown:  # said, so a minimum is never mistaken for what runs
            print(
                f"note: current replicas of {', '.join(unknown)} unknown (no series in the metrics; give --replicas): "
                "planned from minReplicas",
                file=sys.stderr,
            )
    performance = profiles.resolve_all(spec)
    decision = plan_mod.plan(spec, observation, plan_mod.PlannerState(), observation.time_s, performance)
    if args.output in ("json", "yaml"):
        out = report.decision_json(decision)
        if args.prometheus is not None:
            recorded = manifests.RecordedObservation.from_observation(observation)
            out["observation"] = recorded.model_dump(exclude_none=True, mode="json")
            out["data_quality"] = [
                {"signal": n.signal, "kind": n.kind, "message": n.message} for n in observation.notes
            ]
        _print_result(args.output, out)
    else:
        if args.prometheus is not None and unreadable is None:
            _print_result("table", None, report.observation_table(f"observed at {args.prometheus}", observation))
            print()
        _print_result("table", None, report.decision_table(loaded.name, spec, decision))
    if unreadable is not None:
        raise unreadable  # after the held decision: said once, and the exit status tells scripts
    return EXIT_OK


def _parse_replicas(text: str, spec: InferencePoolSpec) -> dict[Role, ReplicaCounts]:
    out: dict[Role, ReplicaCounts] = {}
    roles = spec.active_pools()
    for item in text.split(","):
        role, _, count = item.partition("=")
        role = role.strip()
        if role not in roles or not count.strip().isdigit():
            raise UsageError(f"--replicas: wants ROLE=N for {', '.join(roles)} (e.g. decode=4), got {item!r}")
        out[role] = ReplicaCounts(int(count), int(count))
    return out


def _observe_prometheus(
    spec: InferencePoolSpec, args: argparse.Namespace, replicas: dict[Role, ReplicaCounts] | None
) -> tuple[Observation, PrometheusUnreadable | None]:
    """The observation read now, and the failure when Prometheus answered no query (exit status 3)."""
    import asyncio
    import time

    from tokenscale.metrics.observe import observe
    from tokenscale.metrics.prometheus import Credentials, PrometheusClient

    def read(flag: str, path: str | None) -> str | None:
        if path is None:
            return None
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise UsageError(f"{flag}: cannot read {path}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{flag}: {path} is not a UTF-8 text file") from None

    _url_flag("--prometheus", args.prometheus)
    credentials = Credentials(
        bearer_token=read("--bearer-token-file", args.bearer_token_file),
        ca_pem=read("--ca-file", args.ca_file),
        insecure_skip_verify=args.insecure_skip_verify,
    )
    client = PrometheusClient(args.prometheus, spec.metrics.prometheus.timeout.seconds, credentials)
    try:
        result = asyncio.run(observe(spec, client, time.time(), replicas))
    finally:
        client.close()
    if result.queries and len(result.errors) == len(result.queries):
        # Not one query answered. With --replicas the held decision is still worth printing; without,
        # there is not even a replica count to show (a minimum is not what runs).
        first = next((n for n in result.observation.notes if n.kind in result.errors.values()), None)
        kinds = ", ".join(sorted(set(result.errors.values())))
        failure = PrometheusUnreadable(
            f"--prometheus: cannot read {args.prometheus}: {first.message if first else kinds}"
        )
        if replicas is None:
            raise failure
        return result.observation, failure
    return result.observation, None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from tokenscale.sim import traces, workload

    loaded = _load_one_pool(args.file)
    spec = loaded.pool.spec
    _number_in("--perf-error", args.perf_error, *PERF_ERROR_RANGE)
    _number_in("--speedup", args.speedup, *SPEEDUP_RANGE)
    if args.seed < 0:
        raise UsageError(f"--seed: must be ≥ 0, got {args.seed}")
    cold_start_s = _duration_flag("--cold-start", args.cold_start, spec.forecast.cold_start.seconds)
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
    _number_in("--rate-scale", args.rate_scale, 0.0, math.inf, low_open=True)
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
    out = Path(args.out)
    created = _prepare_out_dir("--out-dir", out)
    try:
        return _simulate_and_report(args, loaded, spec, prior, truth, w, names, cold_start_s, out, origin)
    except BaseException:
        _remove_empty(created)
        raise


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


SIM_EXTRA_HINT = "pip install 'tokenscale[sim]'"


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
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    from tokenscale.sim import fidelity, loop, references

    setup = loop.SimSetup(spec, w, prior, truth, cold_start_s, cold_start_s * 0.1, args.seed)
    setup = replace(setup, initial=references.warm_start(setup))
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
    _print_result(args.output, summary, table)
    return EXIT_OK


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
    from tokenscale.sim import exporter, loop, policies, workload

    _port_flag("--serve-metrics", args.serve_metrics)
    if args.rate is None:
        raise UsageError("--rate: --serve-metrics needs --rate REQ_PER_S (≥ 0): the arrival rate to simulate")
    _number_in("--rate", args.rate, 0.0, MAX_SERVE_RATE_PER_S)
    rng = np.random.default_rng(args.seed)
    isl = float(exporter.DEFAULT_ISL.sample(rng, 20_000).mean())
    osl = float(exporter.DEFAULT_OSL.sample(rng, 20_000).mean())
    counts = policies.size_for(spec, Load(max(args.rate, 1e-3), isl, osl), truth)
    empty = workload.make_workload("live", [], [], [])
    setup = loop.SimSetup(spec, empty, prior, truth, cold_start_s, cold_start_s * 0.1, args.seed)
    config = loop.fleet_config(setup, counts, cold_start=True)
    workers: dict[str, exporter.WorkerEngine] = {"sglang": "sglang", "trtllm": "trtllm"}
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


def _cmd_fit(args: argparse.Namespace) -> int:
    """Fit prefill and decode coefficients to the points of a CSV file; write a PerformanceProfile."""
    import csv

    path = Path(args.points)
    needs = {"prefill": ("isl_tokens", "seconds"), "decode": ("batch", "context_tokens", "seconds")}
    points: dict[str, list[list[float]]] = {"prefill": [], "decode": []}
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
                where = f"{path}:{reader.line_num}"
                record = dict(zip(header, cells, strict=False))
                phase = record.get("phase", "").lower()
                if phase not in needs:
                    raise UsageError(f"{where}: phase must be prefill or decode, got {record.get('phase', '')!r}")
                values = []
                for name in needs[phase]:
                    if name not in header:
                        raise UsageError(f"{path}: missing column {name} ({phase} rows need {', '.join(needs[phase])})")
                    text = record.get(name, "")
                    if not text:
                        raise UsageError(f"{where}: {name} is empty ({phase} rows need {', '.join(needs[phase])})")
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
                points[phase].append(values)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a CSV file: {err}") from None
    if not points["prefill"] and not points["decode"]:
        raise UsageError(f"{path}: no points (rows with phase prefill or decode under a header line)")
    return _write_profile(points, str(path), f"fit {path.name}", args)


def _cmd_profile(args: argparse.Namespace) -> int:
    """Measure a live engine (`profiling.measure`), then fit and write its profile like `fit`."""
    from tokenscale import profiling

    if args.max_prompt_tokens < 16:
        raise UsageError(f"--max-prompt-tokens: must be ≥ 16, got {args.max_prompt_tokens}")
    if args.max_batch < 2:
        raise UsageError(f"--max-batch: must be ≥ 2 (decode needs several batch sizes), got {args.max_batch}")
    powers = (2**k for k in range(args.max_batch.bit_length()))
    batches = tuple(sorted({*(n for n in powers if n <= args.max_batch), args.max_batch}))
    plan = profiling.Plan(
        max_prompt_tokens=args.max_prompt_tokens,
        batches=batches,
        decode_prompts=(64, max(64, min(512, args.max_prompt_tokens // 2))),
    )
    endpoint = profiling.Endpoint(_url_flag("--url", args.url).rstrip("/"), args.model)
    try:
        points = profiling.measure(endpoint, plan, progress=lambda line: print(line, file=sys.stderr))
    except profiling.ProfileError as err:
        raise UsageError(f"--url: {err}") from None
    if args.points:
        try:
            Path(args.points).write_text(points.csv(), encoding="utf-8")
        except OSError as err:
            raise UsageError(f"--points: cannot write {args.points}: {err.strerror or err}") from None
    measured = {
        "prefill": [[float(isl), s] for isl, s in points.prefill],
        "decode": [[float(n), ctx, s] for n, ctx, s in points.decode],
    }
    return _write_profile(measured, args.url, f"profile {args.url} ({args.model})", args)


def _write_profile(points: dict[str, list[list[float]]], source: str, title: str, args: argparse.Namespace) -> int:
    """Fit the measured points (`fit` reads them from a CSV, `profile` measures them) and write the profile."""
    import yaml

    from tokenscale.api import DecodeProfile, PerformanceProfile, PrefillProfile
    from tokenscale.planner import perf

    if args.kv_capacity_tokens is not None and args.kv_capacity_tokens < 1:
        raise UsageError(f"--kv-capacity-tokens: must be ≥ 1, got {args.kv_capacity_tokens}")

    def fitted(phase: str, columns: list[perf.FloatArray]) -> list[float]:
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

    prefill = decode = None
    if points["prefill"]:
        a, b, c = fitted("prefill", list(np.array(points["prefill"]).T))
        prefill = PrefillProfile(a_seconds=a, b_seconds_per_token=b, c_seconds_per_token2=c)
    if points["decode"]:
        alpha, beta, gamma = fitted("decode", list(np.array(points["decode"]).T))
        decode = DecodeProfile(alpha_seconds=alpha, beta_seconds=beta, gamma_seconds_per_token=gamma)
    profile = PerformanceProfile(prefill=prefill, decode=decode, kv_capacity_tokens=args.kv_capacity_tokens)
    body = yaml.safe_dump(profile.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
    if args.configmap:
        manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": args.configmap}}
        block = "".join("    " + line for line in body.splitlines(keepends=True))
        text = yaml.safe_dump(manifest, sort_keys=False) + "data:\n  profile.yaml: |\n" + block
    else:
        text = f"# tokenscale {title}: use under pools.<role>.performance.profile\n{body}"
    if args.output == "json":
        text = json.dumps(yaml.safe_load(text.split("\n", 1)[1] if text.startswith("#") else text), indent=2) + "\n"
    if args.output_file:
        try:
            Path(args.output_file).write_text(text, encoding="utf-8")
        except OSError as err:
            raise UsageError(f"--output-file: cannot write {args.output_file}: {err.strerror or err}") from None
    else:
        sys.stdout.write(text)
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


def _cmd_run(args: argparse.Namespace) -> int:
    from tokenscale import controller
    from tokenscale.reconcile import OperatorConfig

    if args.default_prometheus_url is not None:
        _url_flag("--default-prometheus-url", args.default_prometheus_url)
    for flag, port in (("--health-port", args.health_port), ("--metrics-port", args.metrics_port)):
        _port_flag(flag, port)
        if port:  # taken ports fail here in one line, not in kopf's startup retried every minute
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("0.0.0.0", port))
                except OSError as err:
                    raise UsageError(f"{flag}: cannot listen on port {port}: {err.strerror or err}") from None
    try:
        controller.load_credentials()
    except controller.CredentialsError as err:
        raise UsageError(str(err)) from None
    election = None
    if args.leader_election_namespace:
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        election = controller.LeaderElection(args.leader_election_namespace, args.leader_election_lease, identity)
    controller.run(
        OperatorConfig(
            dry_run=args.dry_run,
            namespaces=tuple(args.namespace or ()),
            default_prometheus_url=args.default_prometheus_url,
        ),
        election=election,
        namespaces=args.namespace or (),
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        verbose=args.verbose,
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tokenscale",
        description="SLO-aware autoscaler for LLM inference: size prefill and decode pools to TTFT/TPOT objectives.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("crds", help="print the InferencePool CRD generated from the API models")
    _output_flag(p, ("yaml", "json"))
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("validate", help="check InferencePool manifests the way the API server and operator will")
    p.add_argument("-f", "--file", action="append", required=True, help="manifest file (repeatable; - reads stdin)")
    _output_flag(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "plan",
        help="dry-run one planning decision for a pool, over a live Prometheus or a recorded observation",
        epilog=f"exit status: {EXIT_OK} a decision was printed (held ones too, with their reasons); "
        f"{EXIT_INVALID} bad input; {EXIT_PROMETHEUS_UNREADABLE} --prometheus answered no query at all "
        "(unreachable, timeout, HTTP error, not Prometheus JSON): one line on stderr, after the held "
        "decision when --replicas gives the current replicas, else no decision",
    )
    p.add_argument("-f", "--file", required=True, help="InferencePool manifest (- reads stdin)")
    p.add_argument("--observation", help="recorded observation (YAML; the shape README.md documents; - reads stdin)")
    p.add_argument("--prometheus", metavar="URL", help="read the observation from this Prometheus now")
    p.add_argument("--bearer-token-file", help="with --prometheus: file holding a bearer token")
    p.add_argument("--ca-file", help="with --prometheus: PEM CA bundle for https")
    p.add_argument("--insecure-skip-verify", action="store_true", help="with --prometheus: do not verify TLS")
    p.add_argument(
        "--replicas", metavar="ROLE=N,...", help="current replicas (default: the observation's, or the metrics')"
    )
    _output_flag(p)
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser(
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
    p.add_argument(
        "--out-dir",
        "--out",
        dest="out",
        default="simulate-out",
        metavar="DIR",
        help="directory for summary.json, report.md, plot.png, fidelity.png (default simulate-out)",
    )
    _output_flag(p, help_extra="; json and yaml print summary.json")
    p.add_argument("--requests-csv", action="store_true", help="also write per-request requests.csv")
    p.add_argument(
        "--serve-metrics",
        type=int,
        metavar="PORT",
        help="instead of a report: run one fleet in wall-clock time and serve engine metrics on PORT for Prometheus",
    )
    p.add_argument("--rate", type=float, help="with --serve-metrics: arrivals per simulated second")
    p.add_argument("--host", default="127.0.0.1", help="with --serve-metrics: address to listen on")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "fit",
        help="fit a performance profile (prefill and decode coefficients) to measured points",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
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
(points, R², max relative error, RMSE) goes to stderr.""",
    )
    p.add_argument("points", help="CSV of measured points (format above)")
    _profile_output_flags(p)
    p.add_argument(
        "--kv-capacity-tokens", type=int, metavar="TOKENS", help="KV-cache capacity of one replica, in tokens"
    )
    p.add_argument("--configmap", metavar="NAME", help="write a ConfigMap NAME holding the profile instead")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser(
        "profile",
        help="measure a live engine (OpenAI-compatible) and write its performance profile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Measures one idle replica from outside, then fits and writes the profile as `tokenscale fit` does:
  prefill  time to the first streamed token, one request at a time, prompts of 16 … --max-prompt-tokens
  decode   gaps between streamed tokens with 1 … --max-batch streams decoding together, two prompt lengths
Prompts are token ids with ignore_eos (no tokenizer needed). Progress and fit quality go to stderr.""",
    )
    p.add_argument("--url", required=True, help="the engine's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="the model name the engine serves (/v1/models)")
    p.add_argument("--max-prompt-tokens", type=int, default=2048, metavar="N", help="longest prompt (default 2048)")
    p.add_argument("--max-batch", type=int, default=16, metavar="N", help="most streams decoding at once (default 16)")
    p.add_argument("--points", metavar="CSV", help="also write the measured points, in `fit`'s CSV format")
    _profile_output_flags(p)
    p.add_argument(
        "--kv-capacity-tokens", type=int, metavar="TOKENS", help="KV-cache capacity of one replica, in tokens"
    )
    p.add_argument("--configmap", metavar="NAME", help="write a ConfigMap NAME holding the profile instead")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("run", help="run the operator: plan and scale every InferencePool it can see")
    p.add_argument("--namespace", action="append", metavar="NS", help="watch this namespace (repeatable; default: all)")
    p.add_argument("--dry-run", action="store_true", help="advisory mode for every pool: decide, explain, never scale")
    p.add_argument(
        "--default-prometheus-url",
        metavar="URL",
        help="the Prometheus of pools that set no spec.metrics.prometheus.url (the chart's prometheus.url)",
    )
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    p.add_argument("--health-port", type=int, default=8080, help="liveness endpoint port (GET /healthz); 0: off")
    p.add_argument("--metrics-port", type=int, default=9090, help="operator metrics port (GET /metrics); 0: off")
    p.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="hold a coordination.k8s.io Lease in NS before acting: of several replicas one plans and scales",
    )
    p.add_argument("--leader-election-lease", default="tokenscale", metavar="NAME", help="the Lease's name")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "completion",
        help="print a shell completion script: source <(tokenscale completion bash)",
        description="Print a completion script for bash or zsh, e.g. `source <(tokenscale completion bash)` "
        'in ~/.bashrc, or `tokenscale completion zsh > "${fpath[1]}/_tokenscale"`.',
    )
    p.add_argument("shell", choices=completion.SHELLS, help="the shell")
    p.set_defaults(func=_cmd_completion)
    return parser


def version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("tokenscale")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _output_flag(
    p: argparse.ArgumentParser, formats: Sequence[str] = ("table", "json", "yaml"), help_extra: str = ""
) -> None:
    """`-o/--output FORMAT`: the one meaning of -o in every command."""
    p.add_argument(
        "-o", "--output", choices=formats, default=formats[0], help=f"output format (default {formats[0]}{help_extra})"
    )


def _profile_output_flags(p: argparse.ArgumentParser) -> None:
    """`fit` and `profile` print the profile as YAML or JSON, or write it to --output-file."""
    _output_flag(p, ("yaml", "json"))
    p.add_argument("--output-file", metavar="FILE", help="write the profile to FILE instead of stdout")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in the one error format (`error: tokenscale simulate: ...`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    # Huge inputs overflow to inf inside numpy, which the planner reads as "unreachable"; numpy's
    # RuntimeWarnings (with our source paths) would only bury the answer (issue 13).
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
        with np.errstate(all="ignore"):
            return func(args)
    except (UsageError, manifests.ManifestError, profiles.ProfileError) as err:
        # Only the user's mistakes end here; any other exception is a bug and keeps its traceback.
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except PrometheusUnreadable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROMETHEUS_UNREADABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
