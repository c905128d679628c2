{{/* Resource names: the release's, or fullnameOverride. */}}
{{- define "kce.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels. app.kubernetes.io/name is the scrape job the rules select. */}}
{{- define "kce.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kce.labels" -}}
{{ include "kce.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kce.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the container's environment comes from, if any. */}}
{{- define "kce.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.create -}}
{{- include "kce.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The configuration file's name in the ConfigMap: TOML when configToml is set. */}}
{{- define "kce.configFile" -}}
{{- if .Values.configToml -}}config.toml{{- else -}}config.yaml{{- end -}}
{{- end -}}
