"""`tokenscale run`: run the operator, planning and scaling every InferencePool it can see.

Called by `tokenscale.cli.build_parser`. Checks the flags (ports free, URL well formed, credentials
loadable) in one line each, then hands over to `controller.run`.
"""

from __future__ import annotations

import argparse
import os
import socket

from tokenscale.cli.errors import EXIT_OK, Subparsers, UsageError
from tokenscale.cli.flags import port_flag, url_flag


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("run", help="run the operator: plan and scale every InferencePool it can see")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenscale import controller
    from tokenscale.reconcile import OperatorConfig

    if args.default_prometheus_url is not None:
        url_flag("--default-prometheus-url", args.default_prometheus_url)
    for flag, port in (("--health-port", args.health_port), ("--metrics-port", args.metrics_port)):
        port_flag(flag, port)
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
