"""The planner: pure functions over numpy that turn an Observation into a Decision.

No Kubernetes, no Prometheus, no file or network I/O, no wall clock, no global RNG: the operator,
the `plan` CLI and the simulator call the same `plan()` with plain values.
"""
