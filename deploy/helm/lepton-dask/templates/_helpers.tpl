{{/*
The name of every object: the release's (and the chart's), as charts name
them; at most 37 characters, as the operator appends
"-default-worker-<id>" to it for the worker Deployments.
*/}}
{{- define "lepton-dask.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 37 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 37 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 37 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The scaler's ServiceAccount. */}}
{{- define "lepton-dask.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-scaler" (include "lepton-dask.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the Prometheus Operator's objects render: asked for (true), or
"auto" and the cluster serves their API (monitoring.coreos.com/v1).
*/}}
{{- define "lepton-dask.monitoring" -}}
{{- $on := toString .Values.prometheus.enabled -}}
{{- if or (eq $on "true") (and (eq $on "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}
