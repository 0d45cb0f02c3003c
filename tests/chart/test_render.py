"""The chart as `helm template` renders it: valid Kubernetes objects, a hardened Deployment, least-privilege RBAC.

Every values set is linted, rendered with its CRDs, and each built-in object validated with
kubernetes-validate's strict schemas (unknown fields rejected) for the oldest and newest Kubernetes it
knows. Prometheus Operator objects (monitoring.coreos.com) have no schema there, so they are checked
structurally: their selectors match the Service or pod the chart renders, and their ports exist. RBAC
is compared, grant by grant, with the least-privilege set the operator's contract names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from harness.tools import Helm

from .conftest import CHART, FULLNAME, RELEASE_NAMESPACE, ROOT, Rendered

Render = Callable[[dict[str, Any]], Rendered]

MONITORING = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
OBSERVABILITY = {**MONITORING, "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
EVERYTHING: dict[str, Any] = {
    **OBSERVABILITY,
    **NAMESPACED,
    "image": {"repository": "registry.example/tokenscale", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccount": {"create": True, "name": "autoscaler", "annotations": {"example.com/role": "tokenscale"}},
    "scaleTargets": [{"apiGroup": "serving.example.com", "resources": ["modelservers", "routers"]}],
    "logFormat": "text",
    "dryRun": True,
    "extraArgs": ["--verbose"],
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
    "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]
            }
        }
    },
    "podAnnotations": {"example.com/scrape": "false"},
    "podLabels": {"team": "ml-platform"},
    "priorityClassName": "system-cluster-critical",
}

BASE_KINDS = {
    "CustomResourceDefinition": 1, "ServiceAccount": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1
}  # fmt: skip
CLUSTER_RBAC = {"ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1}  # + the Lease's Role
NAMESPACED_RBAC = {**CLUSTER_RBAC, "Role": 3, "RoleBinding": 3}
OBSERVABILITY_KINDS = {"ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1, "ConfigMap": 1}

# (values, kinds rendered)
VALUE_SETS = {
    "default": ({}, {**BASE_KINDS, **CLUSTER_RBAC}),
    "namespaced-two-namespaces": (NAMESPACED, {**BASE_KINDS, **NAMESPACED_RBAC}),
    "monitoring-alerts-dashboard": (OBSERVABILITY, {**BASE_KINDS, **CLUSTER_RBAC, **OBSERVABILITY_KINDS}),
    "rbac-create-false": ({"rbac": {"create": False}}, BASE_KINDS),
    "everything-set": (EVERYTHING, {**BASE_KINDS, **NAMESPACED_RBAC, **OBSERVABILITY_KINDS}),
}
VALUE_SET_PARAMS = [pytest.param(values, kinds, id=name) for name, (values, kinds) in VALUE_SETS.items()]

# The oldest and the newest Kubernetes kubernetes-validate has schemas for.
K8S_VERSIONS = [kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version()]
MONITORING_GROUP = "monitoring.coreos.com/v1"


@pytest.mark.parametrize(("values", "kinds"), VALUE_SET_PARAMS)
def test_helm_lint_strict_passes(helm: Helm, tmp_path: Path, values: dict[str, Any], kinds: dict[str, int]) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm.run("lint", "--strict", str(CHART), "--namespace", RELEASE_NAMESPACE, "--values", str(values_file))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize(("values", "kinds"), VALUE_SET_PARAMS)
def test_rendered_objects_are_valid_for_kubernetes(
    render: Render, values: dict[str, Any], kinds: dict[str, int], k8s_version: str
) -> None:
    rendered = render(values)
    assert rendered.kinds() == kinds
    errors = []
    for document in rendered.documents:
        if document["apiVersion"] == MONITORING_GROUP:
            continue  # no schema in kubernetes-validate: checked by test_monitoring_objects_select_the_operator
        try:
            kubernetes_validate.validate(document, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            errors.append(f"{document['kind']}/{document['metadata']['name']}: {path}: {err.message}")
    assert errors == []


@pytest.mark.parametrize(("values", "kinds"), VALUE_SET_PARAMS)
def test_every_object_is_labelled_and_placed(render: Render, values: dict[str, Any], kinds: dict[str, int]) -> None:
    for document in render(values).documents:
        if document["kind"] == "CustomResourceDefinition":
            continue  # from crds/, copied verbatim: not templated
        labels = document["metadata"]["labels"]
        name = f"{document['kind']}/{document['metadata']['name']}"
        assert labels["app.kubernetes.io/instance"] == "ts", name
        assert labels["app.kubernetes.io/name"] == "tokenscale", name
        assert labels["app.kubernetes.io/managed-by"] == "Helm", name
        if document["kind"] in ("Role", "RoleBinding"):
            # The watched namespaces; the Lease's Role in the release namespace.
            leases = document["metadata"]["name"].endswith("-leader-election")
            allowed = [RELEASE_NAMESPACE] if leases else values["watchNamespaces"]
            assert document["metadata"]["namespace"] in allowed, name
        elif document["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert document["metadata"]["namespace"] == RELEASE_NAMESPACE, name


def test_chart_crd_is_a_copy_of_the_generated_crd(render: Render) -> None:
    source = ROOT / "crds" / "tokenscale.dev_inferencepools.yaml"
    copy = CHART / "crds" / source.name
    fix = f"cp {source.relative_to(ROOT)} {copy.parent.relative_to(ROOT)}/"
    assert copy.read_bytes() == source.read_bytes(), f"{copy.relative_to(ROOT)} drifted from crds/: run `{fix}`"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [source.name]
    assert render({}).one("CustomResourceDefinition") == yaml.safe_load(source.read_text())


# --- the Deployment ---------------------------------------------------------------------------


def _container(rendered: Rendered) -> dict[str, Any]:
    containers = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_deployment_is_two_replicas_electing_a_leader_with_a_disruption_budget(render: Render) -> None:
    rendered = render({})
    spec = rendered.one("Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    container = _container(rendered)
    assert f"--leader-election-namespace={RELEASE_NAMESPACE}" in container["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_one_replica_is_recreated_without_a_disruption_budget(render: Render) -> None:
    rendered = render({"replicaCount": 1})
    spec = rendered.one("Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert rendered.of_kind("PodDisruptionBudget") == []


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="default"),
        pytest.param(EVERYTHING, id="everything-set"),
    ],
)
def test_deployment_is_hardened(render: Render, values: dict[str, Any]) -> None:
    rendered = render(values)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    container = _container(rendered)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security and "hostNetwork" not in pod and "hostPID" not in pod
    # The only writable place is the /tmp emptyDir.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert [(v["name"], "emptyDir" in v) for v in pod["volumes"]] == [("tmp", True)]


def test_deployment_user_is_the_images_user(render: Render) -> None:
    user = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert user == ["65532:65532"]
    pod_security = render({}).one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}" == user[0]


@pytest.mark.parametrize(
    ("values", "port"),
    [
        pytest.param({}, 8080, id="default-port"),
        pytest.param({"health": {"port": 18080}}, 18080, id="custom-port"),
    ],
)
def test_probes_check_healthz_on_the_health_port(render: Render, values: dict[str, Any], port: int) -> None:
    container = _container(render(values))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == port
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert f"--health-port={port}" in container["args"]


ELECTION_ARGS = [f"--leader-election-namespace={RELEASE_NAMESPACE}", f"--leader-election-lease={FULLNAME}"]
BASE_ARGS = ["run", "--log-format=json", "--health-port=8080", "--metrics-port=9090", *ELECTION_ARGS]


@pytest.mark.parametrize(
    ("values", "args"),
    [
        pytest.param({}, BASE_ARGS, id="default-cluster-wide"),
        pytest.param(NAMESPACED, [*BASE_ARGS, "--namespace=team-a", "--namespace=team-b"], id="namespaced"),
        pytest.param({"dryRun": True}, [*BASE_ARGS, "--dry-run"], id="dry-run"),
        pytest.param(
            {"prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"}},
            [*BASE_ARGS, "--default-prometheus-url=http://prometheus-operated.monitoring.svc:9090"],
            id="default-prometheus-url",
        ),
        pytest.param(
            {"logFormat": "text", "metrics": {"port": 19090}},
            ["run", "--log-format=text", "--health-port=8080", "--metrics-port=19090", *ELECTION_ARGS],
            id="text-logs-metrics-port",
        ),
        pytest.param(
            {"extraArgs": ["--verbose", "--flag=a b"], "watchNamespaces": ["x"]},
            [*BASE_ARGS, "--namespace=x", "--verbose", "--flag=a b"],
            id="extra-args-last",
        ),
    ],
)
def test_operator_arguments(render: Render, values: dict[str, Any], args: list[str]) -> None:
    container = _container(render(values))
    assert container["args"] == args
    assert "command" not in container  # the image's ENTRYPOINT is `tokenscale`


@pytest.mark.parametrize(
    ("values", "image", "pull_policy"),
    [
        pytest.param({}, "ghcr.io/tokenscale/tokenscale:0.1.0", "IfNotPresent", id="tag-is-app-version"),
        pytest.param(
            {"image": {"repository": "r.example/ts", "tag": "dev", "pullPolicy": "Always"}},
            "r.example/ts:dev",
            "Always",
            id="tag-and-policy-set",
        ),
    ],
)
def test_image(render: Render, values: dict[str, Any], image: str, pull_policy: str) -> None:
    container = _container(render(values))
    assert (container["image"], container["imagePullPolicy"]) == (image, pull_policy)


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert chart["apiVersion"] == "v2"
    assert f'version = "{chart["appVersion"]}"' in pyproject


def test_scheduling_and_pull_secrets_reach_the_pod(render: Render) -> None:
    rendered = render(EVERYTHING)
    template = rendered.one("Deployment")["spec"]["template"]
    pod = template["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName"):
        assert pod[key] == EVERYTHING[key], key
    assert pod["serviceAccountName"] == "autoscaler"
    assert template["metadata"]["annotations"] == EVERYTHING["podAnnotations"]
    assert template["metadata"]["labels"]["team"] == "ml-platform"
    assert {"name": "TZ", "value": "UTC"} in _container(rendered)["env"]
    assert rendered.one("ServiceAccount")["metadata"] == {
        **rendered.one("ServiceAccount")["metadata"],
        "name": "autoscaler",
        "annotations": {"example.com/role": "tokenscale"},
    }


def test_metrics_service_selects_the_operator_pod(render: Render) -> None:
    rendered = render({"metrics": {"port": 19090}})
    service = rendered.one("Service")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["metadata"]["name"] == f"{FULLNAME}-metrics"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 19090, "targetPort": "metrics", "protocol": "TCP"}]
    assert {"name": "metrics", "containerPort": 19090, "protocol": "TCP"} in _container(rendered)["ports"]


def test_monitoring_objects_select_the_operator(render: Render) -> None:
    rendered = render({**OBSERVABILITY, "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    service = rendered.one("Service")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"] for p in _container(rendered)["ports"]}

    service_monitor = rendered.one("ServiceMonitor")
    assert service_monitor["apiVersion"] == MONITORING_GROUP
    assert service_monitor["metadata"]["labels"]["release"] == "kps"
    spec = service_monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert [(e["port"], e["path"]) for e in spec["endpoints"]] == [("metrics", "/metrics")]
    assert {e["port"] for e in spec["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}

    pod_monitor = rendered.one("PodMonitor")
    assert pod_monitor["apiVersion"] == MONITORING_GROUP
    spec = pod_monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] in container_ports and endpoint["path"] == "/metrics"
    # Both scrapes carry the job the alerts select: the ServiceMonitor's is the Service's name.
    assert {"action": "replace", "targetLabel": "job", "replacement": service["metadata"]["name"]} in endpoint[
        "relabelings"
    ]

    rule = rendered.one("PrometheusRule")
    assert rule["apiVersion"] == MONITORING_GROUP
    (group,) = rule["spec"]["groups"]
    for entry in group["rules"]:
        assert set(entry) <= {"alert", "expr", "for", "labels", "annotations"}, entry
        assert {"alert", "expr", "for"} <= set(entry), entry
        assert f'job="{service["metadata"]["name"]}"' in entry["expr"], entry["alert"]


@pytest.mark.parametrize(
    ("values", "dashboard_namespace"),
    [
        pytest.param(OBSERVABILITY, RELEASE_NAMESPACE, id="release-namespace"),
        pytest.param(
            {"grafanaDashboard": {"enabled": True, "namespace": "grafana"}}, "grafana", id="grafana-namespace"
        ),
    ],
)
def test_dashboard_configmap_carries_the_dashboard_file(
    render: Render, values: dict[str, Any], dashboard_namespace: str
) -> None:
    configmap = render(values).one("ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == dashboard_namespace
    assert configmap["data"] == {"tokenscale.json": (CHART / "dashboards" / "tokenscale.json").read_text().rstrip("\n")}


def test_optional_objects_are_off_by_default(render: Render) -> None:
    kinds = render({}).kinds()
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"):
        assert kind not in kinds


# --- RBAC ---------------------------------------------------------------------------------------

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def _grants(*grouped: tuple[str, tuple[str, ...], tuple[str, ...]]) -> frozenset[Grant]:
    return frozenset(
        (group, resource, verb) for group, resources, verbs in grouped for resource in resources for verb in verbs
    )


SCALE_VERBS = ("get", "patch", "update")
# What the operator does in each watched namespace.
NAMESPACED_GRANTS = _grants(
    ("tokenscale.dev", ("inferencepools",), ("get", "list", "watch", "patch")),
    ("tokenscale.dev", ("inferencepools/status",), ("get", "patch", "update")),
    ("apps", ("deployments/scale", "statefulsets/scale"), SCALE_VERBS),
    ("leaderworkerset.x-k8s.io", ("leaderworkersets/scale",), SCALE_VERBS),
    ("apps", ("deployments", "statefulsets"), ("get",)),  # status.readyReplicas
    ("leaderworkerset.x-k8s.io", ("leaderworkersets",), ("get",)),
    ("", ("events",), ("create", "patch")),
    ("events.k8s.io", ("events",), ("create", "patch")),
    ("", ("configmaps",), ("get",)),
)
# Prometheus credentials: in the watched namespaces, or in rbac.secretNamespaces; never cluster-wide.
SECRETS = _grants(("", ("secrets",), ("get",)))
# GPUs in use: pods of the watched namespaces, or of the cluster in cluster-wide mode.
PODS = _grants(("", ("pods",), ("list", "watch")))
# What it reads cluster-wide in either mode.
CLUSTER_READS = _grants(
    ("", ("nodes",), ("get", "list", "watch")),
    ("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch")),
)
# Leader election, in the release namespace.
LEASES = _grants(("coordination.k8s.io", ("leases",), ("get", "create", "update")))
ELECTION = {RELEASE_NAMESPACE: LEASES}
# What kopf needs to serve every namespace.
NAMESPACE_WATCH = _grants(("", ("namespaces",), ("list", "watch")))
EXTRA_SCALE = _grants(
    ("serving.example.com", ("modelservers/scale", "routers/scale"), SCALE_VERBS),
    ("serving.example.com", ("modelservers", "routers"), ("get",)),
)
CLUSTER = "<cluster>"


def _bound_grants(rendered: Rendered, service_account: str) -> dict[str, frozenset[Grant]]:
    """Grants bound to the ServiceAccount, by namespace (CLUSTER for ClusterRoleBindings)."""
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in rendered.documents}
    out: dict[str, frozenset[Grant]] = {}
    for binding in rendered.of_kind("RoleBinding") + rendered.of_kind("ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": RELEASE_NAMESPACE}
        ], binding["metadata"]["name"]
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        grants: set[Grant] = set()
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no nonResourceURLs
            grants |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        key = namespace or CLUSTER
        out[key] = out.get(key, frozenset()) | frozenset(grants)
    # Every role is bound (and bound once): no role lies around granting nobody anything.
    bound = [
        (
            b["roleRef"]["kind"],
            b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None,
            b["roleRef"]["name"],
        )
        for b in rendered.of_kind("RoleBinding") + rendered.of_kind("ClusterRoleBinding")
    ]
    assert sorted(k for k in roles if k[0] in ("Role", "ClusterRole")) == sorted(bound)
    return out


@pytest.mark.parametrize(
    ("values", "service_account", "expected"),
    [
        pytest.param(
            {},
            FULLNAME,
            {CLUSTER: NAMESPACED_GRANTS | PODS | CLUSTER_READS | NAMESPACE_WATCH, **ELECTION},
            id="cluster-wide",
        ),
        pytest.param(
            {"rbac": {"secretNamespaces": ["llm"]}},
            FULLNAME,
            {
                CLUSTER: NAMESPACED_GRANTS | PODS | CLUSTER_READS | NAMESPACE_WATCH,
                "llm": SECRETS,
                RELEASE_NAMESPACE: LEASES,
            },
            id="cluster-wide-secrets-in-one-namespace",
        ),
        pytest.param(
            NAMESPACED,
            FULLNAME,
            {
                CLUSTER: CLUSTER_READS,
                RELEASE_NAMESPACE: LEASES,
                "team-a": NAMESPACED_GRANTS | SECRETS | PODS,
                "team-b": NAMESPACED_GRANTS | SECRETS | PODS,
            },
            id="namespaced",
        ),
        pytest.param(
            {"scaleTargets": EVERYTHING["scaleTargets"]},
            FULLNAME,
            {
                CLUSTER: NAMESPACED_GRANTS | PODS | EXTRA_SCALE | CLUSTER_READS | NAMESPACE_WATCH,
                RELEASE_NAMESPACE: LEASES,
            },
            id="cluster-wide-extra-scale-target",
        ),
        pytest.param(
            EVERYTHING,
            "autoscaler",
            {
                CLUSTER: CLUSTER_READS,
                RELEASE_NAMESPACE: LEASES,
                "team-a": NAMESPACED_GRANTS | SECRETS | PODS | EXTRA_SCALE,
                "team-b": NAMESPACED_GRANTS | SECRETS | PODS | EXTRA_SCALE,
            },
            id="namespaced-extra-scale-target-named-account",
        ),
        pytest.param(
            {"serviceAccount": {"create": False, "name": "preexisting"}},
            "preexisting",
            {CLUSTER: NAMESPACED_GRANTS | PODS | CLUSTER_READS | NAMESPACE_WATCH, **ELECTION},
            id="existing-service-account",
        ),
    ],
)
def test_rbac_grants_exactly_the_least_privilege_set(
    render: Render, values: dict[str, Any], service_account: str, expected: dict[str, frozenset[Grant]]
) -> None:
    rendered = render(values)
    granted = _bound_grants(rendered, service_account)
    assert granted.keys() == expected.keys()
    for scope, grants in expected.items():
        assert sorted(granted[scope] - grants) == [], f"{scope}: more than needed"
        assert sorted(grants - granted[scope]) == [], f"{scope}: missing"
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == service_account


def test_namespaced_mode_grants_nothing_namespaced_cluster_wide(render: Render) -> None:
    (cluster_role,) = render(NAMESPACED).of_kind("ClusterRole")
    groups = {g for rule in cluster_role["rules"] for g in rule["apiGroups"]}
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert "tokenscale.dev" not in groups
    assert not any(r.endswith("/scale") or r.startswith("inferencepools") for r in resources)
    assert not resources & {"secrets", "configmaps", "events", "namespaces", "pods"}
    verbs = {v for rule in cluster_role["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}


def test_secrets_are_never_readable_cluster_wide(render: Render) -> None:
    for values in [*(v for v, _ in VALUE_SETS.values()), {"rbac": {"secretNamespaces": ["llm"]}}]:
        for role in render(values).of_kind("ClusterRole"):
            assert not any("secrets" in rule["resources"] for rule in role["rules"]), (values, role)


def test_no_wildcards_and_no_write_to_workloads(render: Render) -> None:
    for values in (v for v, _ in VALUE_SETS.values()):
        for role in render(values).of_kind("Role") + render(values).of_kind("ClusterRole"):
            for rule in role["rules"]:
                assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
                if rule["apiGroups"] != ["tokenscale.dev"] and set(rule["verbs"]) & {"patch", "update"}:
                    assert all(r.endswith("/scale") or r in ("events", "leases") for r in rule["resources"]), rule
                assert "delete" not in rule["verbs"] and "deletecollection" not in rule["verbs"], rule


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"rbac": {"create": False}}, id="cluster-wide"),
        pytest.param({"rbac": {"create": False}, **NAMESPACED}, id="namespaced"),
    ],
)
def test_rbac_create_false_renders_no_rbac(render: Render, values: dict[str, Any]) -> None:
    kinds = render(values).kinds()
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & kinds.keys()
    assert kinds["ServiceAccount"] == 1


def test_service_account_create_false_renders_none(render: Render) -> None:
    rendered = render({"serviceAccount": {"create": False}})
    assert "ServiceAccount" not in rendered.kinds()
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_cluster_scoped_names_include_the_release_namespace(render: Render) -> None:
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert render({}).one(kind)["metadata"]["name"] == f"{FULLNAME}-{RELEASE_NAMESPACE}"
