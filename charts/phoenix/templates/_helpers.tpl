{{/* Names and labels shared by every template. */}}
{{- define "phoenix.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "phoenix.fullname" -}}
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

{{- define "phoenix.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "phoenix.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "phoenix.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phoenix.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "phoenix.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "phoenix.embeddedStore" -}}
{{- if not .Values.store.etcdEndpoints }}true{{ end }}
{{- end }}

{{/* PVE flags, shared by the server and the controller sets. */}}
{{- define "phoenix.pveArgs" -}}
{{- with .Values.pve }}
{{- if .endpoint }}
- --pve-endpoint={{ .endpoint }}
{{- if .node }}
- --pve-node={{ .node }}
{{- end }}
{{- if .tokenSecret.name }}
- --pve-token-file=/etc/phoenix/pve-token/{{ .tokenSecret.key }}
{{- end }}
{{- if .caSecret.name }}
- --pve-ca-file=/etc/phoenix/pve-ca/{{ .caSecret.key }}
{{- end }}
{{- if .fingerprint }}
- --pve-fingerprint={{ .fingerprint }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "phoenix.pveVolumeMounts" -}}
{{- if .Values.pve.endpoint }}
{{- if .Values.pve.tokenSecret.name }}
- {name: pve-token, mountPath: /etc/phoenix/pve-token, readOnly: true}
{{- end }}
{{- if .Values.pve.caSecret.name }}
- {name: pve-ca, mountPath: /etc/phoenix/pve-ca, readOnly: true}
{{- end }}
{{- end }}
{{- end }}

{{- define "phoenix.pveVolumes" -}}
{{- if .Values.pve.endpoint }}
{{- if .Values.pve.tokenSecret.name }}
- name: pve-token
  secret: {secretName: {{ .Values.pve.tokenSecret.name }}, defaultMode: 0440}
{{- end }}
{{- if .Values.pve.caSecret.name }}
- name: pve-ca
  secret: {secretName: {{ .Values.pve.caSecret.name }}}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when several servers run (a StatefulSet on etcd, docs/ha.md), else empty. */}}
{{- define "phoenix.severalServers" -}}
{{- if gt (int .Values.server.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* The Service's DNS names, space-separated: every server certificate names them. */}}
{{- define "phoenix.serviceNames" -}}
{{- $svc := include "phoenix.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- printf "%s %s.%s %s.%s.svc %s.%s.svc.%s" $svc $svc $ns $svc $ns $svc $ns .Values.clusterDomain }}
{{- end }}

{{/* The headless Service of several servers (a DNS label: at most 63 characters). */}}
{{- define "phoenix.headlessName" -}}
{{- printf "%s-headless" (include "phoenix.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}
