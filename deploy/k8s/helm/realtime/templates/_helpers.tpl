{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "realtime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the headless Service appends "-headless", so keep room for it. */}}
{{- define "realtime.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "realtime.headlessName" -}}
{{- printf "%s-headless" (include "realtime.fullname" .) }}
{{- end }}

{{- define "realtime.secretName" -}}
{{- default (include "realtime.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "realtime.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "realtime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "realtime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "realtime.labels" -}}
helm.sh/chart: {{ include "realtime.chart" . }}
{{ include "realtime.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The pods' labels (and the Services' selectors). */}}
{{- define "realtime.podSelectorLabels" -}}
{{ include "realtime.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* The ports the binary listens on: REALTIME_BIND and REALTIME_CLUSTER_BIND are set to these. */}}
{{- define "realtime.httpPort" -}}4000{{- end }}
{{- define "realtime.clusterPort" -}}4100{{- end }}

{{/* SIGTERM drain budget plus the preStop sleep plus a margin. */}}
{{- define "realtime.terminationGracePeriodSeconds" -}}
{{- $grace := div (int64 .Values.shutdown.graceMs) 1000 }}
{{- add $grace (int64 .Values.shutdown.preStopSleepSeconds) (int64 .Values.shutdown.marginSeconds) 1 }}
{{- end }}
