"""`helm install` of the chart into the real kube-apiserver 1.20, and what its ServiceAccount may then do.

The chart is installed in the test's namespace, in namespaced mode (watching a second, fresh
namespace) or cluster-wide. `kubectl auth can-i --as=system:serviceaccount:<ns>:<sa>` then asks the
server's RBAC authorizer about each grant the operator needs and about writes it must not have. The
operator itself does not run here (the image is not built); the install and the RBAC are what is tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import kubernetes
import pytest
from harness.cluster import Cluster
from harness.resources import create_namespace, delete_namespace
from harness.tools import Helm

from .conftest import CHART, FULLNAME, RELEASE

pytestmark = pytest.mark.e2e

WATCHED = "<watched>"  # the namespace the chart watches in namespaced mode
RELEASE_NS = "<release>"  # the release's own namespace
OTHER = "<other>"  # a namespace nobody watches


@dataclass(frozen=True)
class Namespaces:
    release: str
    watched: str
    other: str

    def resolve(self, placeholder: str) -> str:
        return {WATCHED: self.watched, RELEASE_NS: self.release, OTHER: self.other}[placeholder]


@pytest.fixture
def namespaces(api_client: kubernetes.client.ApiClient, namespace: str) -> Iterator[Namespaces]:
    watched = create_namespace(api_client, prefix="w")
    other = create_namespace(api_client, prefix="o")
    try:
        yield Namespaces(release=namespace, watched=watched, other=other)
    finally:
        delete_namespace(api_client, watched)
        delete_namespace(api_client, other)


# (verb, resource, subresource, namespace, allowed)
Check = tuple[str, str, str, str, bool]

NEEDED_IN_WATCHED: list[Check] = [
    ("patch", "deployments.apps", "scale", WATCHED, True),
    ("get", "deployments.apps", "scale", WATCHED, True),
    ("update", "statefulsets.apps", "scale", WATCHED, True),
    ("get", "deployments.apps", "", WATCHED, True),  # status.readyReplicas
    ("patch", "inferencepools.tokenscale.dev", "status", WATCHED, True),
    ("watch", "inferencepools.tokenscale.dev", "", WATCHED, True),
    ("patch", "inferencepools.tokenscale.dev", "", WATCHED, True),
    ("create", "events", "", WATCHED, True),
    ("get", "configmaps", "", WATCHED, True),
    ("list", "nodes", "", "", True),
    # leader election: the Lease lives in the release namespace
    ("get", "leases.coordination.k8s.io", "", RELEASE_NS, True),
    ("create", "leases.coordination.k8s.io", "", RELEASE_NS, True),
    ("update", "leases.coordination.k8s.io", "", RELEASE_NS, True),
]
FORBIDDEN_EVERYWHERE: list[Check] = [
    ("delete", "deployments.apps", "", WATCHED, False),
    ("patch", "deployments.apps", "", WATCHED, False),
    ("update", "deployments.apps", "", WATCHED, False),
    ("delete", "inferencepools.tokenscale.dev", "", WATCHED, False),
    ("update", "inferencepools.tokenscale.dev", "", WATCHED, False),
    ("list", "secrets", "", WATCHED, False),
    ("create", "pods", "", WATCHED, False),
    ("patch", "nodes", "", "", False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", "", False),
    ("update", "leases.coordination.k8s.io", "", WATCHED, False),
    ("delete", "leases.coordination.k8s.io", "", RELEASE_NS, False),
    ("get", "secrets", "", OTHER, False),  # never cluster-wide, in either mode
]
NAMESPACED_ONLY: list[Check] = [
    ("get", "secrets", "", WATCHED, True),
    ("list", "pods", "", WATCHED, True),  # GPUs in use, from the watched namespaces' pods
    ("watch", "pods", "", "", False),  # and no others
    ("list", "pods", "", OTHER, False),
    ("get", "secrets", "", RELEASE_NS, False),
    ("patch", "deployments.apps", "scale", OTHER, False),
    ("patch", "inferencepools.tokenscale.dev", "status", OTHER, False),
    ("list", "inferencepools.tokenscale.dev", "", "", False),  # no cluster-wide list in namespaced mode
    ("watch", "namespaces", "", "", False),
]
CLUSTER_WIDE_ONLY: list[Check] = [
    ("watch", "pods", "", "", True),
    ("patch", "deployments.apps", "scale", OTHER, True),
    ("list", "inferencepools.tokenscale.dev", "", "", True),
    ("watch", "namespaces", "", "", True),
]


def _can_i(cluster: Cluster, service_account: str, check: Check, namespaces: Namespaces) -> bool:
    verb, resource, subresource, namespace, _ = check
    args = ["auth", "can-i", verb, resource, f"--as={service_account}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["--namespace", namespaces.resolve(namespace)] if namespace else ["--all-namespaces"]
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    # can-i exits 0 for yes and 1 for no; anything else is an error, not an answer.
    assert (result.returncode, answer) in ((0, "yes"), (1, "no")), (
        f"{args}: {result.returncode} {answer} {result.stderr}"
    )
    return answer == "yes"


def _describe(check: Check, allowed: bool) -> str:
    verb, resource, subresource, namespace, _ = check
    what = f"{resource}/{subresource}" if subresource else resource
    return f"{'may' if allowed else 'may not'} {verb} {what} in {namespace or 'the cluster'}"


# Cluster-wide mode reads Secrets only in rbac.secretNamespaces (none by default).
NO_SECRETS: list[Check] = [("get", "secrets", "", WATCHED, False)]
SECRETS_IN_WATCHED: list[Check] = [("get", "secrets", "", WATCHED, True)]


@pytest.mark.parametrize(
    ("mode", "checks"),
    [
        pytest.param("namespaced", NEEDED_IN_WATCHED + FORBIDDEN_EVERYWHERE + NAMESPACED_ONLY, id="namespaced"),
        pytest.param(
            "cluster-wide", NEEDED_IN_WATCHED + FORBIDDEN_EVERYWHERE + CLUSTER_WIDE_ONLY + NO_SECRETS, id="cluster-wide"
        ),
        pytest.param(
            "cluster-wide-secrets",
            NEEDED_IN_WATCHED + FORBIDDEN_EVERYWHERE + CLUSTER_WIDE_ONLY + SECRETS_IN_WATCHED,
            id="cluster-wide-secrets-in-one-namespace",
        ),
    ],
)
def test_installed_service_account_can_do_what_the_operator_needs_and_no_more(
    helm: Helm, cluster: Cluster, namespaces: Namespaces, mode: str, checks: list[Check]
) -> None:
    namespaced = mode == "namespaced"
    settings = {
        "namespaced": ["--set", f"watchNamespaces={{{namespaces.watched}}}"],
        "cluster-wide": [],
        "cluster-wide-secrets": ["--set", f"rbac.secretNamespaces={{{namespaces.watched}}}"],
    }[mode]
    installed = helm.run(
        "install", RELEASE, str(CHART), "--namespace", namespaces.release, *settings, kubeconfig=cluster.kubeconfig_path
    )
    try:
        assert "STATUS: deployed" in installed.stdout, installed.stdout
        notes = installed.stdout.split("NOTES:", 1)[1]
        target = namespaces.watched if namespaced else "<namespace>"
        assert f"kubectl get tspool -n {target} --watch" in notes
        service_account = f"system:serviceaccount:{namespaces.release}:{FULLNAME}"
        answers = {check: _can_i(cluster, service_account, check, namespaces) for check in checks}
        wrong = [_describe(check, allowed) for check, allowed in answers.items() if allowed != check[4]]
        assert wrong == []
        # The CRD came with the chart (or was there already) and is served: `kubectl get tspool` works.
        assert cluster.kubectl("get", "tspool", "--namespace", namespaces.watched).returncode == 0
    finally:
        helm.run("uninstall", RELEASE, "--namespace", namespaces.release, kubeconfig=cluster.kubeconfig_path)
    remaining = cluster.kubectl(
        "get", "clusterrole", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    ).stdout
    assert f"{FULLNAME}-{namespaces.release}" not in remaining
