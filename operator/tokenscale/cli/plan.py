"""`tokenscale plan`: dry-run one planning decision for a pool, over a recorded observation or a
live Prometheus.

Called by `tokenscale.cli.build_parser`. The decision is `planner.plan.plan`'s, the one the operator
makes; this module reads the observation and prints the decision.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tokenscale import manifests, report
from tokenscale.api import InferencePoolSpec, Role
from tokenscale.cli.errors import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PROMETHEUS_UNREADABLE,
    PrometheusUnreadable,
    Subparsers,
    UsageError,
)
from tokenscale.cli.flags import output_flag, stdin_once, url_flag
from tokenscale.cli.output import print_result
from tokenscale.cli.validate import load_one_pool
from tokenscale.planner import plan as plan_mod
from tokenscale.planner import profiles
from tokenscale.planner.observation import Observation, ReplicaCounts


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
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
    output_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stdin_once([("-f", args.file), ("--observation", args.observation)])
    loaded = load_one_pool(args.file)
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
        print_result(args.output, out)
    else:
        if args.prometheus is not None and unreadable is None:
            print_result("table", None, report.observation_table(f"observed at {args.prometheus}", observation))
            print()
        print_result("table", None, report.decision_table(loaded.name, spec, decision))
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


def _read_secret(flag: str, path: str | None) -> str | None:
    """The stripped text of the file a credentials flag names; None when the flag is not given."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise UsageError(f"{flag}: cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag}: {path} is not a UTF-8 text file") from None


def _observe_prometheus(
    spec: InferencePoolSpec, args: argparse.Namespace, replicas: dict[Role, ReplicaCounts] | None
) -> tuple[Observation, PrometheusUnreadable | None]:
    """The observation read now, and the failure when Prometheus answered no query (exit status 3)."""
    import asyncio
    import time

    from tokenscale.metrics.observe import observe
    from tokenscale.metrics.prometheus import Credentials, PrometheusClient

    url_flag("--prometheus", args.prometheus)
    credentials = Credentials(
        bearer_token=_read_secret("--bearer-token-file", args.bearer_token_file),
        ca_pem=_read_secret("--ca-file", args.ca_file),
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
