"""The discrete-event simulator behind `tokenscale simulate`: workloads, traces and a simulated fleet.

- `sim.workload`: the `Workload` value, `speedup` / `rate_scale`, the seeded synthetic generator.
- `sim.traces`: Azure LLM inference CSV, Mooncake JSONL and plain CSV readers (`read_trace`).
- `sim.fleet`: the event-driven fleet (prefill/decode or aggregated pools, cold starts, draining)
  that the control loop drives with `run_until`, `snapshot` and `set_replicas`.
- `sim.histogram`: cumulative histograms with vLLM's buckets, as the fleet exports them.

Of tokenscale's packages the simulator imports only `tokenscale.api` and `tokenscale.planner`
(STYLE.md, layers). Time and randomness are always arguments.
"""
