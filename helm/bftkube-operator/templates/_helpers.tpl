{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's name, at most 63 characters (a label value). */}}
{{- define "bftkube-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name when it already contains the chart's name, else both. */}}
{{- define "bftkube-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bftkube-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the operator's pods: fixed for the life of a release. */}}
{{- define "bftkube-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bftkube-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bftkube-operator.labels" -}}
{{ include "bftkube-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: bftkube
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "bftkube-operator.chart" . }}
{{- end -}}

{{- define "bftkube-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bftkube-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bftkube-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator may do to BftClusters and the objects it makes for them: no wildcards, and Secrets only
by name (it reads its own, never lists or watches them). A ClusterRole when it watches every namespace,
else a Role in watchNamespace.
*/}}
{{- define "bftkube-operator.rules" -}}
- apiGroups: ["bftkube.dev"]
  resources: ["bftclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["bftkube.dev"]
  resources: ["bftclusters/status"]
  verbs: ["get", "patch", "update"]
# Owned objects set blockOwnerDeletion; clusters with OwnerReferencesPermissionEnforcement require this.
- apiGroups: ["bftkube.dev"]
  resources: ["bftclusters/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
