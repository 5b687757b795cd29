{{/*
Chart name, overridable with nameOverride; truncated to the 63-character DNS label limit.
*/}}
{{- define "pulmoseg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name unless the release
name already contains it.
*/}}
{{- define "pulmoseg.fullname" -}}
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

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "pulmoseg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable across upgrades, so they must not include versions.
*/}}
{{- define "pulmoseg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pulmoseg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels for every object.
*/}}
{{- define "pulmoseg.labels" -}}
helm.sh/chart: {{ include "pulmoseg.chart" . }}
{{ include "pulmoseg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference
app.kubernetes.io/part-of: pulmoseg
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of the `helm test` pod: a name of its own, so no serving selector matches it.
*/}}
{{- define "pulmoseg.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pulmoseg.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/*
The scrape label: the ServiceMonitor selects the Services that carry it (the main one and the
training API's), not the headless or DICOM Services of the same pods, so no pod is scraped
twice under two jobs.
*/}}
{{- define "pulmoseg.scrapeLabel" -}}
pulmoseg.io/scrape: "true"
{{- end }}

{{/*
Server seconds to drain in-flight studies after SIGTERM: what is left of the pod's grace period
after the preStop sleep and a margin (values.yaml, "Shutdown").
*/}}
{{- define "pulmoseg.gracePeriodSeconds" -}}
{{- $total := int .Values.terminationGracePeriodSeconds }}
{{- $sleep := int .Values.shutdown.preStopSleepSeconds }}
{{- $margin := int .Values.shutdown.marginSeconds }}
{{- $grace := sub (sub $total $sleep) $margin }}
{{- if lt $grace 1 }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdown.preStopSleepSeconds (%d) + shutdown.marginSeconds (%d): the server needs at least 1 s to drain its studies" $total $sleep $margin) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/*
Egress rules to the records database (networkPolicy.database), when the pods use one.
*/}}
{{- define "pulmoseg.databaseEgress" -}}
{{- if .Values.quality.database.existingSecret }}
# The records database (quality.database.existingSecret).
- ports:
    - port: {{ .Values.networkPolicy.database.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.database.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Container image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "pulmoseg.image" -}}
{{- include "pulmoseg.imageRef" (dict "image" .Values.image "root" .) }}
{{- end }}

{{/*
Full path of the model file inside the container.
*/}}
{{- define "pulmoseg.modelPath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.file }}
{{- end }}

{{/*
Image reference from a {repository, tag, digest} map: repository@digest when a digest is given
(the bytes cannot change under the tag), else repository:tag (tag defaulting to appVersion).
Call with (dict "image" .Values.image "root" .).
*/}}
{{- define "pulmoseg.imageRef" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
Service account the pods run as.
*/}}
{{- define "pulmoseg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pulmoseg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Replicas the chart plans for: the autoscaler's minimum when it is on.
*/}}
{{- define "pulmoseg.plannedReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
Container security context shared by every container of the chart.
*/}}
{{- define "pulmoseg.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
Small resources for the init container that only copies or downloads the model.
*/}}
{{- define "pulmoseg.initResources" -}}
requests:
  cpu: 100m
  memory: 128Mi
limits:
  cpu: "1"
  memory: 512Mi
{{- end }}

{{/*
Most replicas that can run at once: autoscaling.maxReplicas with the autoscaler, else
replicaCount. Single-writer volumes (SQLite records, the PACS spool) need this to be 1.
*/}}
{{- define "pulmoseg.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
"true" when the pod mounts a PersistentVolumeClaim that only one process may write (the quality
SQLite file or the PACS spool): rollouts then stop the old pod before starting the new one.
*/}}
{{- define "pulmoseg.singleWriter" -}}
{{- if or .Values.quality.persistence.existingClaim (and .Values.pacs.enabled .Values.pacs.spool.existingClaim) }}true{{ end }}
{{- end }}

{{/*
Ports the PACS gateway connects to: those of pacs.destinations (AE@host:port) and of
pacs.stowUrl (explicit, else 80/443), without duplicates, as a JSON list.
*/}}
{{- define "pulmoseg.pacsEgressPorts" -}}
{{- $ports := list }}
{{- range .Values.pacs.destinations }}
{{- $ports = append $ports (int (regexFind "[0-9]+$" .)) }}
{{- end }}
{{- with .Values.pacs.stowUrl }}
{{- $host := (urlParse .).host }}
{{- if regexMatch ":[0-9]+$" $host }}
{{- $ports = append $ports (int (regexFind "[0-9]+$" $host)) }}
{{- else }}
{{- $ports = append $ports (hasPrefix "https://" . | ternary 443 80) }}
{{- end }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}
