"""Fixture helpers that run real components for tokenscale's tests.

`binaries` finds the executables that scripts/setup-test-env.sh installs or builds, `processes`
starts and stops child processes by PID, `cluster` runs etcd + kube-apiserver (+ controller manager)
on loopback, `resources` talks to that apiserver (CRDs, namespaces), `prometheus` runs real
Prometheus servers, `tools` runs kubectl and Helm, `wait` polls with deadlines, and `soak` runs the
chaos soak of bench/bench_soak.py and tests/e2e/test_soak.py. The fixtures in tests/conftest.py are
built from these; tests use the fixtures, and reach for these modules only for their types and
helpers.
"""
