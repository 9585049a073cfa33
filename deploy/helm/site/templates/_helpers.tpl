{{/* Chart name. */}}
{{- define "site.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-CHART, or RELEASE when it already contains the chart name. */}}
{{- define "site.fullname" -}}
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

{{- define "site.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The site's name in the federation. */}}
{{- define "site.siteName" -}}
{{- default .Release.Name .Values.site.name }}
{{- end }}

{{- define "site.labels" -}}
helm.sh/chart: {{ include "site.chart" . }}
{{ include "site.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dask-federation
{{- end }}

{{- define "site.selectorLabels" -}}
app.kubernetes.io/name: {{ include "site.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: site
{{- end }}

{{- define "site.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "site.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "site.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
A byte size such as "4GiB", "512MiB" or "2GB" in bytes (a float).
Units: KiB MiB GiB TiB (1024-based) and kB KB MB GB TB (1000-based), as Dask reads them.
*/}}
{{- define "site.bytes" -}}
{{- $s := . | toString | trim }}
{{- $re := "^([0-9]+(?:\\.[0-9]+)?)\\s*([A-Za-z]+)$" }}
{{- if not (regexMatch $re $s) }}
{{- fail (printf "cannot read the size %q: write a number and a unit (MiB, GiB, TiB, MB, GB, TB), e.g. 4GiB" $s) }}
{{- end }}
{{- $num := regexReplaceAll $re $s "${1}" | float64 }}
{{- $unit := regexReplaceAll $re $s "${2}" | lower }}
{{- $factors := dict "kib" 1024.0 "mib" 1048576.0 "gib" 1073741824.0 "tib" 1099511627776.0 "kb" 1000.0 "mb" 1000000.0 "gb" 1000000000.0 "tb" 1000000000000.0 }}
{{- if not (hasKey $factors $unit) }}
{{- fail (printf "cannot read the size %q: unknown unit %q (use MiB, GiB, TiB, MB, GB or TB)" $s $unit) }}
{{- end }}
{{- mulf $num (get $factors $unit) }}
{{- end }}

{{/* Container memory limit: workers x memoryLimit + memoryOverhead, rounded up to whole Mi. */}}
{{- define "site.containerMemory" -}}
{{- $perWorker := include "site.bytes" .Values.site.memoryLimit | float64 }}
{{- $overhead := include "site.bytes" .Values.site.memoryOverhead | float64 }}
{{- $total := addf (mulf (.Values.site.workers | float64) $perWorker) $overhead }}
{{- printf "%dMi" (divf $total 1048576.0 | ceil | int64) }}
{{- end }}

{{/* Volume name of a dataset's mount source; datasets on one claim or host directory share it. */}}
{{- define "site.datasetVolumeName" -}}
{{- if .claimName }}
{{- printf "ds-%s" (printf "pvc:%s" .claimName | sha256sum | trunc 12) }}
{{- else }}
{{- printf "ds-%s" (printf "host:%s" .hostPath | sha256sum | trunc 12) }}
{{- end }}
{{- end }}

{{/* Path of a dataset inside the container. */}}
{{- define "site.datasetPath" -}}
{{- $rel := .ds.path | default "" | trimPrefix "/" }}
{{- if $rel }}
{{- printf "/data/%s/%s" .name $rel }}
{{- else }}
{{- printf "/data/%s" .name }}
{{- end }}
{{- end }}

{{/* The site.yaml read by `dask federation site` (schema: federation.config.SiteConfig). */}}
{{- define "site.configYaml" -}}
{{- $datasets := dict }}
{{- range $name, $ds := .Values.datasets }}
{{- $entry := dict "path" (include "site.datasetPath" (dict "name" $name "ds" $ds)) }}
{{- with $ds.description }}{{ $_ := set $entry "description" . }}{{ end }}
{{- with $ds.engine }}{{ $_ := set $entry "engine" . }}{{ end }}
{{- with $ds.egress }}{{ $_ := set $entry "egress" . }}{{ end }}
{{- with $ds.maxEgressBytes }}{{ $_ := set $entry "max_egress_bytes" (toString .) }}{{ end }}
{{- $_ := set $datasets (toString $name) $entry }}
{{- end }}
{{- $cfg := dict
  "site" (include "site.siteName" .)
  "hub" .Values.site.hub
  "workers" .Values.site.workers
  "nthreads" .Values.site.nthreads
  "memory_limit" (toString .Values.site.memoryLimit)
  "datasets" $datasets }}
{{- with .Values.site.localDirectory }}
{{- $_ := set $cfg "local_directory" . }}
{{- end }}
{{- with .Values.site.connectivity }}
{{- $_ := set $cfg "connectivity" . }}
{{- end }}
{{- if .Values.operator.enabled }}
{{- /* worker pods of the dask-kubernetes operator, scaled by the hub's demand */}}
{{- $perWorker := include "site.bytes" .Values.site.memoryLimit | float64 }}
{{- $podMemory := mulf (.Values.site.workers | float64) $perWorker }}
{{- $_ := set $cfg "cluster" (dict
  "type" "kubernetes"
  "image" (include "site.image" .)
  "cores" (mul .Values.site.workers .Values.site.nthreads)
  "memory" (printf "%dMiB" (divf $podMemory 1048576.0 | ceil | int64))
  "processes" .Values.site.workers) }}
{{- $_ := set $cfg "adapt" (dict
  "minimum" (mul .Values.operator.minReplicas .Values.site.workers)
  "maximum" (mul .Values.operator.maxReplicas .Values.site.workers)) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* An emptyDir source as JSON: only the non-empty sizeLimit/medium settings. */}}
{{- define "site.emptyDir" -}}
{{- $e := dict }}
{{- with .sizeLimit }}{{ $_ := set $e "sizeLimit" (toString .) }}{{ end }}
{{- with .medium }}{{ $_ := set $e "medium" . }}{{ end }}
{{- toJson $e }}
{{- end }}

{{/* Environment of the site's containers (site process and operator workers). */}}
{{- define "site.env" -}}
# The root filesystem is read-only: keep every cache and config write in /tmp.
- name: HOME
  value: /tmp
- name: DASK_TEMPORARY_DIRECTORY
  value: /tmp
{{- if eq .Values.site.connectivity "outbound-only" }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}
{{- with .Values.site.env }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/* Volume mounts of the site's containers: config, /tmp, scratch, TLS, datasets. */}}
{{- define "site.volumeMounts" -}}
- name: config
  mountPath: /etc/federation/site.yaml
  subPath: site.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.site.localDirectory }}
- name: scratch
  mountPath: {{ .Values.site.localDirectory }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/federation/tls
  readOnly: true
{{- end }}
{{- range $name, $ds := .Values.datasets }}
- name: {{ include "site.datasetVolumeName" $ds.mount }}
  mountPath: {{ printf "/data/%s" $name }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/* Volumes of the site's pods (the datasets on one claim or host directory share one). */}}
{{- define "site.volumes" -}}
{{- $datasetVolumes := dict }}
{{- range $name, $ds := .Values.datasets }}
{{- $_ := set $datasetVolumes (include "site.datasetVolumeName" $ds.mount) $ds.mount }}
{{- end }}
- name: config
  configMap:
    name: {{ include "site.fullname" . }}
- name: tmp
  emptyDir: {{ include "site.emptyDir" (dict "sizeLimit" .Values.tmpSizeLimit) }}
{{- if .Values.site.localDirectory }}
- name: scratch
  emptyDir: {{ include "site.emptyDir" .Values.scratch }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
    items:
      - key: ca.pem
        path: ca.pem
      - key: cert.pem
        path: cert.pem
      - key: key.pem
        path: key.pem
{{- end }}
{{- range $volName, $mount := $datasetVolumes }}
- name: {{ $volName }}
  {{- if $mount.claimName }}
  persistentVolumeClaim:
    claimName: {{ $mount.claimName }}
    readOnly: true
  {{- else }}
  hostPath:
    path: {{ $mount.hostPath }}
    type: {{ $mount.hostPathType | default "Directory" }}
  {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/* --tls-* options of `dask federation site` and `site-worker`, as a list. */}}
{{- define "site.tlsArgs" -}}
{{- if .Values.tls.enabled }}
{{- toJson (list "--tls-ca-file" "/etc/federation/tls/ca.pem" "--tls-cert" "/etc/federation/tls/cert.pem" "--tls-key" "/etc/federation/tls/key.pem") }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}
