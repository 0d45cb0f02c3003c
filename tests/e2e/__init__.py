"""End-to-end tests against the real kube-apiserver and Prometheus started by tests/conftest.py.

A package, so that its modules may share a base name with unit-test modules (tests/test_crd.py).
"""
