{{/* The worker pod, for the Deployment (one GPU, one process) and the DaemonSet (perNode: --gpus all). */}}
{{- define "pastiche.workers.podTemplate" -}}
{{- $w := .Values.workers }}
{{- $perNode := eq $w.mode "perNode" }}
{{- $gpus := ternary (int $w.gpusPerNode) (int $w.gpusPerPod) $perNode }}
{{- $ports := ternary $gpus 1 $perNode }}
metadata:
  labels:
    {{- include "pastiche.workers.selectorLabels" . | nindent 4 }}
    {{- with $w.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- include "pastiche.configChecksum" . | nindent 4 }}
    {{- if .Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $w.metricsPort | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "pastiche.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $w.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  # On SIGTERM a worker cancels its render and gives the task back; if it is killed
  # before that, its lease expires and another worker redoes the task.
  terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml $w.podSecurityContext | nindent 4 }}
  containers:
    - name: worker
      image: {{ include "pastiche.image" (dict "image" $w.image "chart" .Chart) | quote }}
      imagePullPolicy: {{ $w.image.pullPolicy }}
      env:
        - name: PASTICHE_COORDINATOR
          value: {{ include "pastiche.coordinatorUrl" . | quote }}
        {{- if $perNode }}
        - name: PASTICHE_GPUS
          value: all
        - name: PASTICHE_WORKER_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        {{- else }}
        - name: PASTICHE_DEVICE
          value: {{ default (ternary "cuda:0" "cpu" (gt $gpus 0)) $w.device | quote }}
        {{- end }}
        - name: PASTICHE_METRICS_LISTEN
          value: "0.0.0.0:{{ $w.metricsPort }}"
        - name: PASTICHE_CONNECT_TIMEOUT
          value: {{ $w.connectTimeout | quote }}
        - name: PASTICHE_INPUT_CACHE_MIB
          value: {{ $w.inputCacheMib | quote }}
        {{- include "pastiche.commonEnv" . | nindent 8 }}
        {{- if .Values.tls.enabled }}
        - name: PASTICHE_TLS_CA
          value: /etc/pastiche/tls/ca.crt
        {{- end }}
        # The root filesystem is read-only: caches go to the /tmp emptyDir.
        - name: HOME
          value: /tmp
        - name: TMPDIR
          value: /tmp
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with include "pastiche.s3.secretName" . }}
      envFrom:
        - secretRef:
            name: {{ . }}
      {{- end }}
      ports:
        {{- range $i, $_ := until $ports }}
        - name: {{ ternary (printf "metrics-%d" $i) "metrics" $perNode }}
          containerPort: {{ add $w.metricsPort $i }}
          protocol: TCP
        {{- end }}
      {{- $probe := dict "httpGet" (dict "path" "/healthz" "port" (ternary "metrics-0" "metrics" $perNode)) }}
      startupProbe:
        {{- toYaml (merge (deepCopy $probe) $w.startupProbe) | nindent 8 }}
      livenessProbe:
        {{- toYaml (merge (deepCopy $probe) $w.livenessProbe) | nindent 8 }}
      readinessProbe:
        {{- toYaml (merge (deepCopy $probe) $w.readinessProbe) | nindent 8 }}
      resources:
        {{- $resources := deepCopy $w.resources }}
        {{- if gt $gpus 0 }}
        {{- $limits := default dict $resources.limits }}
        {{- $_ := set $limits $w.gpuResourceName $gpus }}
        {{- $_ := set $resources "limits" $limits }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- toYaml $w.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if .Values.tls.enabled }}
        - name: tls-ca
          mountPath: /etc/pastiche/tls
          readOnly: true
        {{- end }}
        {{- with $w.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $w.tmpSizeLimit | quote }}
    {{- if .Values.tls.enabled }}
    # Only the CA: the workers never see the coordinator's private key.
    - name: tls-ca
      secret:
        secretName: {{ default (include "pastiche.tls.secretName" .) .Values.tls.caSecret }}
        items:
          - key: {{ .Values.tls.caKey }}
            path: ca.crt
    {{- end }}
    {{- with $w.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- /* A perNode DaemonSet must stay off nodes without GPUs (its pods would wait forever there). */}}
  {{- with (or $w.nodeSelector (ternary (dict "nvidia.com/gpu.present" "true") dict $perNode)) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
