{{/* Chart name. */}}
{{- define "hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-CHART, or RELEASE when it already contains the chart name. */}}
{{- define "hub.fullname" -}}
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

{{- define "hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hub.labels" -}}
helm.sh/chart: {{ include "hub.chart" . }}
{{ include "hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dask-federation
{{- end }}

{{- define "hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end }}

{{- define "hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hub.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Is a hub.yaml passed with --config? (non-empty hub.config or a tokens Secret) */}}
{{- define "hub.useConfigFile" -}}
{{- if or .Values.hub.config .Values.hub.tokensSecret }}true{{ end }}
{{- end }}

{{/* The rendered hub.yaml. */}}
{{- define "hub.configYaml" -}}
{{- $cfg := deepCopy (.Values.hub.config | default dict) }}
{{- if .Values.hub.tokensSecret }}
{{- $_ := set $cfg "tokens_file" (printf "/etc/federation/tokens/%s" .Values.hub.tokensSecretKey) }}
{{- end }}
{{- if $cfg }}
{{- toYaml $cfg }}
{{- else }}
{}
{{- end }}
{{- end }}

{{/* An emptyDir source as JSON: only the non-empty sizeLimit/medium settings. */}}
{{- define "hub.emptyDir" -}}
{{- $e := dict }}
{{- with .sizeLimit }}{{ $_ := set $e "sizeLimit" (toString .) }}{{ end }}
{{- with .medium }}{{ $_ := set $e "medium" . }}{{ end }}
{{- toJson $e }}
{{- end }}

{{/* HTTP path of distributed's health route, under the dashboard prefix if any. */}}
{{- define "hub.healthPath" -}}
{{- $prefix := .Values.hub.dashboardPrefix | default "" | trimAll "/" }}
{{- if $prefix }}{{ printf "/%s/health" $prefix }}{{ else }}/health{{ end }}
{{- end }}
