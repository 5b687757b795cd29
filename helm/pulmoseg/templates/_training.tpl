{{/*
Selector labels of training pods: a name of their own, so the serving Service, PDB and
NetworkPolicy (which select app.kubernetes.io/name=<chart name>) never match them.
*/}}
{{- define "pulmoseg.trainingSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pulmoseg.name" . }}-train
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: training
{{- end }}

{{- /* One pod template for both kinds; the command differs only in how torchrun learns the
rendezvous (the training-operator's PET_* variables, or explicit flags here). */}}
{{- define "pulmoseg.trainingPod" -}}
{{- $t := .root.Values.training }}
{{- $gpus := mul (int $t.procsPerNode) (int $t.gpusPerProc) }}
metadata:
  labels:
    {{- include "pulmoseg.trainingSelectorLabels" .root | nindent 4 }}
spec:
  {{- with .root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  automountServiceAccountToken: false
  serviceAccountName: {{ include "pulmoseg.serviceAccountName" .root }}
  {{- with .subdomain }}
  subdomain: {{ . }}
  {{- end }}
  restartPolicy: {{ .restartPolicy }}
  {{- if and (gt $gpus 0) .root.Values.gpu.runtimeClassName }}
  runtimeClassName: {{ .root.Values.gpu.runtimeClassName }}
  {{- end }}
  securityContext:
    {{- toYaml .root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: pytorch
      image: {{ include "pulmoseg.imageRef" (dict "image" $t.image "root" .root) | quote }}
      imagePullPolicy: {{ $t.image.pullPolicy }}
      command:
        {{- toYaml .command | nindent 8 }}
      env:
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        - name: HOME
          value: /tmp
        - name: OMP_NUM_THREADS
          value: "1"
      securityContext:
        {{- include "pulmoseg.containerSecurityContext" .root | nindent 8 }}
      resources:
        {{- $res := deepCopy $t.resources }}
        {{- if gt $gpus 0 }}
        {{- $limits := get $res "limits" | default dict }}
        {{- $_ := set $limits .root.Values.gpu.resourceName $gpus }}
        {{- $_ = set $res "limits" $limits }}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      volumeMounts:
        - name: experiment
          mountPath: /etc/pulmoseg-train
          readOnly: true
        - name: data
          mountPath: /data
          readOnly: true
        - name: runs
          mountPath: /runs
        - name: shm
          mountPath: /dev/shm
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: experiment
      configMap:
        name: {{ .name }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ required "training.dataClaim must name the PVC with the training data" $t.dataClaim }}
        readOnly: true
    - name: runs
      persistentVolumeClaim:
        claimName: {{ required "training.outputClaim must name a ReadWriteMany PVC for checkpoints" $t.outputClaim }}
    # DataLoader workers share batches through /dev/shm; the container default is 64 MiB.
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $t.shmSizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: 2Gi
  {{- if gt $gpus 0 }}
  {{- with .root.Values.gpu.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .root.Values.gpu.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
{{- end }}

{{/*
Labels of training objects: the common ones, with the training name and component.
*/}}
{{- define "pulmoseg.trainingLabels" -}}
helm.sh/chart: {{ include "pulmoseg.chart" . }}
{{ include "pulmoseg.trainingSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pulmoseg
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of the training API objects: its selector labels (with its own component) and the
common ones; each key once (YAML forbids duplicates, Helm would keep the last silently).
*/}}
{{- define "pulmoseg.trainingApiLabels" -}}
helm.sh/chart: {{ include "pulmoseg.chart" . }}
{{ include "pulmoseg.trainingApiSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pulmoseg
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of the training API pod: a name of its own, so neither the serving Service,
PDB and NetworkPolicy nor the training jobs' selectors match it.
*/}}
{{- define "pulmoseg.trainingApiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pulmoseg.name" . }}-training-api
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: training-api
{{- end }}
