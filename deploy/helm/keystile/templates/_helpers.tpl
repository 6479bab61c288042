{{- define "keystile.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "keystile.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "keystile.labels" -}}
{{ include "keystile.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "keystile.secretEnv" -}}
{{- range $name, $key := dict "KEYSTILE_DB" "db" "KEYSTILE_REDIS_URL" "redis-url" "KEYSTILE_PEPPER" "pepper" "KEYSTILE_ADMIN_KEY" "admin-key" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "existingSecret: the Secret with db, redis-url, pepper and admin-key" $.Values.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end -}}
