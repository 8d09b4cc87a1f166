{{/* Names and labels shared by every template. */}}

{{- define "dsr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dsr.fullname" -}}
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

{{- define "dsr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dsr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dsr.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dsr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mixpanel-dsr-operator
{{- end }}

{{- define "dsr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dsr.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dsr.leaseName" -}}
{{- default (include "dsr.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The Secret holding the installation's key for digests of ids (the operator makes it). */}}
{{- define "dsr.keySecretName" -}}
{{- printf "%s-key" (include "dsr.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dsr.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The prometheus job label of the metrics Service's targets. */}}
{{- define "dsr.metricsJob" -}}
{{- printf "%s-metrics" (include "dsr.fullname" .) }}
{{- end }}

{{/* Rules on the operator's own resources in a namespace (Role or ClusterRole). */}}
{{- define "dsr.namespacedRules" -}}
# Watch requests (kopf writes nothing on them), delete finished ones after
# ttlSecondsAfterFinished.
- apiGroups: [mixpaneldsr.io]
  resources: [datasubjectrequests]
  verbs: [get, list, watch, delete]
# Watch projects.
- apiGroups: [mixpaneldsr.io]
  resources: [mixpanelprojects]
  verbs: [get, list, watch]
# The ledger: one MixpanelTask per Mixpanel task, beside its project. Listed once per
# project at start-up, written before each create call, removed after retention.
- apiGroups: [mixpaneldsr.io]
  resources: [mixpaneltasks]
  verbs: [list, create, delete]
# Receipts: one per finished request, written before its final status, never changed,
# removed after receipt retention (operator.receiptRetention).
- apiGroups: [mixpaneldsr.io]
  resources: [datasubjectrequestreceipts]
  verbs: [list, create, delete]
# Write status: requests' phase, conditions, counts and task references; projects'
# readiness; tasks' Mixpanel state.
- apiGroups: [mixpaneldsr.io]
  resources: [datasubjectrequests/status, mixpanelprojects/status, mixpaneltasks/status]
  verbs: [patch]
# The export Secret is owned by its request with blockOwnerDeletion, which clusters with
# the OwnerReferencesPermissionEnforcement admission plugin only allow with this.
- apiGroups: [mixpaneldsr.io]
  resources: [datasubjectrequests/finalizers]
  verbs: [update]
# The export-link Secret <request>-export, owned by the request: written as the links
# arrive, deleted with the request. Names follow the requests, so no resourceNames.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch, delete]
# Events on requests and projects (the operator's and kopf's).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Rules on the cluster-scoped project kind and kopf's cluster observation. */}}
{{- define "dsr.clusterRules" -}}
# Watch cluster-wide projects; their status.
- apiGroups: [mixpaneldsr.io]
  resources: [clustermixpanelprojects]
  verbs: [get, list, watch]
- apiGroups: [mixpaneldsr.io]
  resources: [clustermixpanelprojects/status]
  verbs: [patch]
# A ClusterMixpanelProject serves only the namespaces its namespaceSelector selects:
# the labels of a requesting namespace are read.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
# Approvals are trusted only while the admission policy that checks them is bound.
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingadmissionpolicybindings]
  resourceNames: [datasubjectrequest-approval.mixpaneldsr.io]
  verbs: [get]
# kopf notices CRDs being installed or removed while it runs.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
