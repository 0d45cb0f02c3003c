{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "tokenscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: the release name when it already contains the chart name,
release-chart otherwise; fullnameOverride replaces both.
*/}}
{{- define "tokenscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): the full name plus the release
namespace, so two releases of the same name in different namespaces do not collide.
*/}}
{{- define "tokenscale.clusterName" -}}
{{- printf "%s-%s" (include "tokenscale.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "tokenscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels for every object of the release.
*/}}
{{- define "tokenscale.labels" -}}
helm.sh/chart: {{ include "tokenscale.chart" . }}
{{ include "tokenscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokenscale
{{- end }}

{{/*
Labels that select the operator's pod (immutable in the Deployment's selector: keep them few).
*/}}
{{- define "tokenscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "tokenscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image, tag defaulting to the chart's appVersion.
*/}}
{{- define "tokenscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the metrics Service; also the `job` label a ServiceMonitor gives the scrape.
*/}}
{{- define "tokenscale.metricsServiceName" -}}
{{- printf "%s-metrics" (include "tokenscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The `job` label of the operator's scrape, as the alerts select it.
*/}}
{{- define "tokenscale.metricsJob" -}}
{{- default (include "tokenscale.metricsServiceName" .) .Values.prometheusRule.job }}
{{- end }}

{{/*
The kinds whose /scale subresource the operator may read and patch: the built-in workload kinds
plus `scaleTargets`, as a YAML list of {apiGroup, resources}.
*/}}
{{- define "tokenscale.scaleTargets" -}}
- apiGroup: apps
  resources: [deployments, statefulsets]
- apiGroup: leaderworkerset.x-k8s.io
  resources: [leaderworkersets]
{{- with .Values.scaleTargets }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The application rules every watched namespace needs (namespaced mode: in a Role per namespace;
cluster-wide mode: in the ClusterRole). Each verb is commented with why the operator uses it.
*/}}
{{- define "tokenscale.namespacedRules" -}}
# application: watch InferencePools; patch carries kopf's finalizer and progress annotations
# (tokenscale.dev/ prefix) and the pool's own annotations, never its spec.
- apiGroups: ["tokenscale.dev"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "patch"]
# application: conditions, decisions and the printer-column summary live in status.
- apiGroups: ["tokenscale.dev"]
  resources: ["inferencepools/status"]
  verbs: ["get", "patch", "update"]
# application: read and set replicas through /scale only; the workloads themselves are only read,
# for the ready replicas their controllers keep in status.readyReplicas.
{{- range (include "tokenscale.scaleTargets" . | fromYamlArray) }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources:
  {{- range .resources }}
    - {{ printf "%s/scale" . | quote }}
  {{- end }}
  verbs: ["get", "patch", "update"]
- apiGroups: [{{ .apiGroup | quote }}]
  resources:
  {{- range .resources }}
    - {{ . | quote }}
  {{- end }}
  verbs: ["get"]
{{- end }}
# application: performance profiles a pool references (its configMapRef).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# framework and application: kopf posts Events for handler outcomes, tokenscale for each scale.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Secrets, for Prometheus credentials: never cluster-wide.
*/}}
{{- define "tokenscale.secretRules" -}}
# application: a pool's Prometheus credentials (its bearer-token, basic-auth and CA *SecretRef
# fields): only in the watched namespaces, or in rbac.secretNamespaces in cluster-wide mode.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}

{{/*
Pods, for the GPUs in use per node group: in each watched namespace, or cluster-wide in that mode.
*/}}
{{- define "tokenscale.podRules" -}}
# application: GPUs in use per node group (requests of scheduled pods).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
The cluster-scoped reads, granted by a ClusterRole in both modes.
*/}}
{{- define "tokenscale.clusterRules" -}}
# application: GPU capacity per node group (allocatable nvidia.com/gpu and node labels).
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
# framework: kopf scans CRDs to find the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
