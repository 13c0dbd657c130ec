{{/* Names ------------------------------------------------------------------ */}}

{{- define "pastiche.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource: <release>-pastiche, or the release name when it already says pastiche. */}}
{{- define "pastiche.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pastiche.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "pastiche.fullname" .) }}
{{- end }}

{{- define "pastiche.workers.fullname" -}}
{{- printf "%s-workers" (include "pastiche.fullname" .) }}
{{- end }}

{{- define "pastiche.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pastiche.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "pastiche.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pastiche.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pastiche
{{- end }}

{{- define "pastiche.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pastiche.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pastiche.coordinator.selectorLabels" -}}
{{ include "pastiche.selectorLabels" . }}
app.kubernetes.io/component: coordinator
{{- end }}

{{- define "pastiche.workers.selectorLabels" -}}
{{ include "pastiche.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/* Images ----------------------------------------------------------------- */}}

{{- define "pastiche.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) }}
{{- end }}

{{/* Secrets ---------------------------------------------------------------- */}}

{{- define "pastiche.tokenSecretName" -}}
{{- default (printf "%s-token" (include "pastiche.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "pastiche.tokenSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* Whether the pods get S3 settings from a Secret, and which. */}}
{{- define "pastiche.s3.createSecret" -}}
{{- with .Values.s3 }}
{{- if and (not .existingSecret) (or .accessKeyId .secretAccessKey .region .endpointUrl) }}true{{ end }}
{{- end }}
{{- end }}

{{- define "pastiche.s3.secretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else if include "pastiche.s3.createSecret" . }}
{{- printf "%s-s3" (include "pastiche.fullname" .) }}
{{- end }}
{{- end }}

{{- define "pastiche.tls.secretName" -}}
{{- required "tls.existingSecret: name the kubernetes.io/tls Secret of the coordinator's certificate" .Values.tls.existingSecret }}
{{- end }}

{{/* The workers' coordinator URL. */}}
{{- define "pastiche.coordinatorUrl" -}}
{{- if .Values.workers.coordinatorUrl }}
{{- .Values.workers.coordinatorUrl }}
{{- else }}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" .Values.tls.enabled) (include "pastiche.coordinator.fullname" .) .Release.Namespace (int .Values.coordinator.service.grpcPort) }}
{{- end }}
{{- end }}

{{/* Environment shared by the coordinator and the workers. */}}
{{- define "pastiche.commonEnv" -}}
- name: PASTICHE_STORE
  value: {{ .Values.store | quote }}
- name: PASTICHE_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if .Values.auth.enabled }}
- name: PASTICHE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "pastiche.tokenSecretName" . }}
      key: {{ include "pastiche.tokenSecretKey" . }}
{{- end }}
{{- end }}

{{/* Pod annotations that restart the pods when the settings they read change. */}}
{{- define "pastiche.configChecksum" -}}
checksum/config: {{ dict "store" .Values.store "s3" .Values.s3 "auth" (omit .Values.auth "token") "tls" .Values.tls | toJson | sha256sum }}
{{- end }}
