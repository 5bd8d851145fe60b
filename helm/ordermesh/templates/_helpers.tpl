{{/*
Names, labels and the checks that values.schema.json cannot express well.
*/}}

{{- define "ordermesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ordermesh.fullname" -}}
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
A name made of the full name and a suffix, within the 63 characters a
Service (a DNS label) allows: the full name is shortened, never the suffix,
so names stay distinct. ctx = dict "root" $ "suffix" "inventory".
*/}}
{{- define "ordermesh.named" -}}
{{- $suffix := printf "-%s" .suffix -}}
{{- $base := include "ordermesh.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" -}}
{{ $base }}{{ $suffix }}
{{- end }}

{{/* The gRPC services, in the order their Deployments are rendered. */}}
{{- define "ordermesh.services" -}}
order inventory payment
{{- end }}

{{/* Every `ordermesh serve` target. */}}
{{- define "ordermesh.targets" -}}
gateway order inventory payment
{{- end }}

{{- define "ordermesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ordermesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ordermesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
An object's annotations: its own (ctx.annotations, may be empty) over
commonAnnotations (the object's own win on a shared key), as YAML; empty when
both are. ctx = dict "root" $ "annotations" MAP. Use as
  {{- with include "ordermesh.annotations" (dict "root" $ "annotations" X) }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
*/}}
{{- define "ordermesh.annotations" -}}
{{- $merged := merge (deepCopy (default (dict) .annotations)) (deepCopy (default (dict) .root.Values.commonAnnotations)) -}}
{{- with $merged }}{{ toYaml . }}{{ end -}}
{{- end }}

{{/* Selector labels of one component: ctx = dict "root" $ "component" "order". */}}
{{- define "ordermesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ordermesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ordermesh.componentLabels" -}}
{{ include "ordermesh.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The shared ServiceAccount (serviceAccount.name, default the full name). */}}
{{- define "ordermesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ordermesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount a component's pods run as: its own when its block sets
serviceAccount.name or serviceAccount.annotations (the name, default
<fullname>-<component>), else the shared one.
ctx = dict "root" $ "block" VALUES "component" NAME.
*/}}
{{- define "ordermesh.componentServiceAccountName" -}}
{{- $sa := default (dict) .block.serviceAccount -}}
{{- if or $sa.name $sa.annotations -}}
{{- default (include "ordermesh.named" (dict "root" .root "suffix" .component)) $sa.name -}}
{{- else -}}
{{- include "ordermesh.serviceAccountName" .root -}}
{{- end -}}
{{- end }}

{{/*
An image reference with global.imageRegistry in place of its registry: the
first path component is the registry when the reference has more than one
and it holds a dot or a colon or is localhost (Docker's rule); otherwise the
registry is prepended. Unchanged without global.imageRegistry.
ctx = dict "root" $ "image" "postgres:17-alpine".
*/}}
{{- define "ordermesh.imageWithRegistry" -}}
{{- $image := .image -}}
{{- with trimSuffix "/" (default "" (index (default (dict) .root.Values.global) "imageRegistry")) -}}
{{- $parts := splitList "/" $image -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $image = join "/" (rest $parts) -}}
{{- end -}}
{{- $image = printf "%s/%s" . $image -}}
{{- end -}}
{{ $image }}
{{- end }}

{{- define "ordermesh.image" -}}
{{- $image := "" -}}
{{- if .Values.image.digest -}}
{{- $image = printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- $image = printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{ include "ordermesh.imageWithRegistry" (dict "root" . "image" $image) }}
{{- end }}

{{/*
A Deployment's rollout strategy: the component's own (block.strategy) or the
chart-wide one; Recreate carries no rollingUpdate.
ctx = dict "root" $ "block" VALUES.
*/}}
{{- define "ordermesh.strategy" -}}
{{- $s := default .root.Values.strategy .block.strategy -}}
{{- $type := default "RollingUpdate" $s.type -}}
type: {{ $type }}
{{- if and (eq $type "RollingUpdate") $s.rollingUpdate }}
rollingUpdate:
  {{- if hasKey $s.rollingUpdate "maxUnavailable" }}
  maxUnavailable: {{ $s.rollingUpdate.maxUnavailable }}
  {{- end }}
  {{- if hasKey $s.rollingUpdate "maxSurge" }}
  maxSurge: {{ $s.rollingUpdate.maxSurge }}
  {{- end }}
{{- end }}
{{- end }}

{{/* In-cluster name of a target's Service. */}}
{{- define "ordermesh.host" -}}
{{ include "ordermesh.named" (dict "root" .root "suffix" .target) }}
{{- end }}

{{/*
Fully qualified name, for the mesh layer's DNS discovery. The trailing dot
makes it absolute: with the pod's `ndots:5`, a name without it is first tried
under each search domain (three lookups that fail) at every refresh.
*/}}
{{- define "ordermesh.fqdn" -}}
{{ include "ordermesh.host" . }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain | trimSuffix "." }}.
{{- end }}

{{- define "ordermesh.configName" -}}
{{ include "ordermesh.named" (dict "root" . "suffix" "config") }}
{{- end }}

{{/* The Secret with the database URLs: the user's, or the one the chart makes. */}}
{{- define "ordermesh.databaseSecret" -}}
{{- default (include "ordermesh.named" (dict "root" . "suffix" "database")) .Values.database.existingSecret }}
{{- end }}

{{/* Whether the chart makes the database Secret (from database.urls or the demo PostgreSQL). */}}
{{- define "ordermesh.makesDatabaseSecret" -}}
{{- if and (not .Values.database.existingSecret) (or .Values.demo.postgresql.enabled .Values.database.urls.order) }}true{{ end }}
{{- end }}

{{- define "ordermesh.demoPostgresHost" -}}
{{ include "ordermesh.named" (dict "root" . "suffix" "demo-postgresql") }}
{{- end }}

{{- define "ordermesh.demoNatsHost" -}}
{{ include "ordermesh.named" (dict "root" . "suffix" "demo-nats") }}
{{- end }}

{{/*
Cross-field checks, with messages that say what to set. Rendered by every
Deployment template, so `helm install` and `helm template` stop here.
*/}}
{{- define "ordermesh.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.auth.mode "production") (regexMatch "^http://" $v.auth.jwksUrl) (not (regexMatch "^http://(localhost|127\\.[0-9.]+|\\[::1\\])(:[0-9]+)?(/|$)" $v.auth.jwksUrl)) }}
{{- fail (printf "auth: auth.jwksUrl %s is plain http; production mode fetches keys over https only (the gateway would refuse to start)" $v.auth.jwksUrl) }}
{{- end }}
{{- $ports := dict }}
{{- $named := list (list "gateway.port" $v.gateway.port) (list "order.port" $v.order.port) (list "inventory.port" $v.inventory.port) (list "payment.port" $v.payment.port) }}
{{- if $v.metrics.enabled }}{{ $named = append $named (list "metrics.port" $v.metrics.port) }}{{ end }}
{{- if $v.tls.enabled }}{{ $named = append $named (list "tls.healthPort" $v.tls.healthPort) }}{{ end }}
{{- range $named }}
{{- $key := toString (index . 1) }}
{{- if hasKey $ports $key }}
{{- fail (printf "ports: %s and %s are both %s; every port must differ (SingleBinary runs them in one pod)" (get $ports $key) (index . 0) $key) }}
{{- end }}
{{- $_ := set $ports $key (index . 0) }}
{{- end }}
{{- $gatewayPods := ternary (ternary 2 (int $v.gateway.replicas) $v.gateway.autoscaling.enabled) (int $v.singleBinary.replicas) (eq $v.deploymentMode "Distributed") }}
{{- if and (eq $v.auth.mode "development") (gt (int $gatewayPods) 1) (not $v.auth.hs256Secret.name) }}
{{- fail "auth: development mode with more than one gateway pod needs auth.hs256Secret.name (one shared key): each pod would otherwise make its own, and tokens would work on half of them" }}
{{- end }}
{{- if and $v.tls.enabled (ne $v.deploymentMode "Distributed") }}
{{- fail "tls: mutual TLS is for Distributed mode; in SingleBinary mode the services talk over loopback and only the gateway listens beyond it" }}
{{- end }}
{{- if and $v.tls.enabled $v.tls.certManager.enabled (not $v.tls.certManager.issuerRef.name) }}
{{- fail "tls: tls.certManager.enabled needs tls.certManager.issuerRef.name (a CA issuer that signs every process's certificate)" }}
{{- end }}
{{- if and $v.database.existingSecret (or $v.database.urls.order $v.database.urls.inventory $v.database.urls.payment) }}
{{- fail "database: set either database.existingSecret or database.urls, not both" }}
{{- end }}
{{- if and $v.demo.postgresql.enabled (or $v.database.existingSecret $v.database.urls.order $v.database.urls.inventory $v.database.urls.payment) }}
{{- fail "database: demo.postgresql.enabled supplies the database URLs; unset database.existingSecret and database.urls" }}
{{- end }}
{{- if not (or $v.database.existingSecret $v.demo.postgresql.enabled) }}
{{- $missing := list }}
{{- range $service := list "order" "inventory" "payment" }}
{{- if not (index $v.database.urls $service) }}{{ $missing = append $missing (printf "database.urls.%s" $service) }}{{ end }}
{{- end }}
{{- if $missing }}
{{- fail (printf "database: ordermesh needs one PostgreSQL database per service. Set database.existingSecret to a Secret with the keys %s, %s and %s (see the README), or pass %s at install; for a self-contained demo add -f helm/ordermesh/examples/demo.yaml" $v.database.secretKeys.order $v.database.secretKeys.inventory $v.database.secretKeys.payment (join ", " $missing)) }}
{{- end }}
{{- end }}
{{- if and $v.nats.url $v.nats.existingSecret }}
{{- fail "nats: set either nats.url or nats.existingSecret, not both" }}
{{- end }}
{{- if and $v.demo.nats.enabled (or $v.nats.url $v.nats.existingSecret) }}
{{- fail "nats: demo.nats.enabled supplies the NATS URL; unset nats.url and nats.existingSecret" }}
{{- end }}
{{- if and (eq $v.deploymentMode "Distributed") (not (or $v.nats.url $v.nats.existingSecret $v.demo.nats.enabled)) }}
{{- fail "nats: Distributed mode needs NATS so events cross pods: set nats.url (e.g. nats://nats.nats.svc.cluster.local:4222) or nats.existingSecret" }}
{{- end }}
{{- if and (eq $v.auth.mode "production") (not (or $v.auth.jwksUrl $v.auth.jwksSecret.name)) }}
{{- fail "auth: production mode needs the keys that sign client tokens: set auth.jwksUrl or auth.jwksSecret.name (a Secret with a JWKS document); auth.mode=development is for demos only" }}
{{- end }}
{{- if and (eq $v.auth.mode "production") $v.auth.hs256Secret.name }}
{{- fail "auth: auth.hs256Secret is for development mode only; production verifies tokens with auth.jwksUrl or auth.jwksSecret" }}
{{- end }}
{{- if and $v.serviceMonitor.enabled (not $v.metrics.enabled) }}
{{- fail "serviceMonitor: needs metrics.enabled (the port it scrapes)" }}
{{- end }}
{{- if and $v.metrics.dashboard.enabled (not $v.metrics.enabled) }}
{{- fail "metrics: metrics.dashboard.enabled needs metrics.enabled (the dashboard would show no data)" }}
{{- end }}
{{- if and $v.metrics.prometheusRule.enabled (not $v.metrics.enabled) }}
{{- fail "metrics: metrics.prometheusRule.enabled needs metrics.enabled (the alerts would watch metrics nothing serves)" }}
{{- end }}
{{- with $v.otel.endpoint }}
{{- if regexMatch "^https://" . }}
{{- fail (printf "otel: otel.endpoint %s is https; ordermesh exports OTLP/gRPC in plaintext only (built without TLS for the exporter, the binary would refuse to start): use the collector's http:// address" .) }}
{{- end }}
{{- $port := include "ordermesh.otelPort" $ }}
{{- if not $port }}
{{- fail (printf "otel: otel.endpoint %s has no port; the exporter would dial port 80, not OTLP's 4317: write it, e.g. %s:4317" . (trimSuffix "/" .)) }}
{{- end }}
{{- if or (lt (atoi $port) 1) (gt (atoi $port) 65535) }}
{{- fail (printf "otel: otel.endpoint %s: port %s is not a TCP port" . $port) }}
{{- end }}
{{- end }}
{{- if and (ne (toString $v.otel.samplerArg) "") (not (has $v.otel.sampler (list "traceidratio" "parentbased_traceidratio"))) }}
{{- fail (printf "otel: otel.samplerArg %v applies to the traceidratio samplers only; otel.sampler %s would ignore it (set otel.sampler: parentbased_traceidratio to sample that ratio)" $v.otel.samplerArg $v.otel.sampler) }}
{{- end }}
{{- end }}

{{/* ORDERMESH_NATS_URL, from the value, the Secret or the demo NATS. */}}
{{- define "ordermesh.natsEnv" -}}
{{- if .Values.nats.existingSecret -}}
- name: ORDERMESH_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.existingSecret }}
      key: {{ .Values.nats.secretKey }}
{{- else if .Values.demo.nats.enabled -}}
- name: ORDERMESH_NATS_URL
  value: {{ printf "nats://%s:4222" (include "ordermesh.demoNatsHost" .) | quote }}
{{- else if .Values.nats.url -}}
- name: ORDERMESH_NATS_URL
  value: {{ .Values.nats.url | quote }}
{{- end }}
{{- end }}

{{/* The port of auth.jwksUrl: as written, else 443 for https and 80 for http. */}}
{{- define "ordermesh.jwksPort" -}}
{{- $url := .Values.auth.jwksUrl -}}
{{- $port := regexReplaceAll "^https?://(\\[[^\\]]*\\]|[^/:]*)(:([0-9]+))?.*$" $url "${3}" -}}
{{- if $port }}{{ $port }}{{ else if hasPrefix "https://" $url }}443{{ else }}80{{ end -}}
{{- end }}

{{/* The port of otel.endpoint as written ("" when the URL names none). */}}
{{- define "ordermesh.otelPort" -}}
{{- regexReplaceAll "^https?://(\\[[^\\]]*\\]|[^/:]*)(:([0-9]+))?.*$" .Values.otel.endpoint "${3}" }}
{{- end }}

{{/*
The OpenTelemetry SDK's variables, with otel.endpoint only (none without it).
ctx = dict "root" $ "serviceName" "ordermesh-order".
*/}}
{{- define "ordermesh.otelEnv" -}}
{{- $o := .root.Values.otel -}}
{{- if $o.endpoint -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $o.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $o.sampler | quote }}
{{- if ne (toString $o.samplerArg) "" }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ toString $o.samplerArg | quote }}
{{- end }}
{{- with $o.resourceAttributes }}
{{- $pairs := list }}
{{- range $key, $value := . }}{{ $pairs = append $pairs (printf "%s=%s" $key $value) }}{{ end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $pairs | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Settings every target shares. */}}
{{- define "ordermesh.commonEnv" -}}
- name: ORDERMESH_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: ORDERMESH_POLICY
  value: /etc/ordermesh/config/mesh-policy.toml
- name: ORDERMESH_DATA_DIR
  value: /data
{{- end }}

{{/* The gateway's settings (also used by `up` in SingleBinary mode). */}}
{{- define "ordermesh.gatewayEnv" -}}
{{- $v := .Values -}}
- name: ORDERMESH_AUTH_MODE
  value: {{ $v.auth.mode | quote }}
{{- with $v.auth.issuer }}
- name: ORDERMESH_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with $v.auth.audience }}
- name: ORDERMESH_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- with $v.auth.jwksUrl }}
- name: ORDERMESH_JWT_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- if $v.auth.jwksSecret.name }}
- name: ORDERMESH_JWT_JWKS_FILE
  value: /etc/ordermesh/jwks/{{ $v.auth.jwksSecret.key }}
{{- end }}
{{- if $v.auth.hs256Secret.name }}
- name: ORDERMESH_JWT_HS256_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $v.auth.hs256Secret.name }}
      key: {{ $v.auth.hs256Secret.key }}
{{- end }}
{{- if $v.gatewayConfig }}
- name: ORDERMESH_GATEWAY_CONFIG
  value: /etc/ordermesh/config/gateway.toml
{{- end }}
{{- end }}

{{/*
One downstream: its URL (a plain tonic address) and, with DNS discovery, the
mesh policy override that resolves its headless Service to one endpoint per
pod. ctx = dict "root" $ "target" "payment".
*/}}
{{- define "ordermesh.downstreamEnv" -}}
{{- $port := index .root.Values .target "port" -}}
- name: ORDERMESH_{{ upper .target }}_URL
  value: {{ printf "http://%s:%v" (include "ordermesh.host" .) $port | quote }}
{{- if .root.Values.mesh.dnsDiscovery }}
- name: ORDERMESH_MESH__DOWNSTREAM__{{ upper .target }}__DNS
  value: {{ printf "%s:%v" (include "ordermesh.fqdn" .) $port | quote }}
{{- end }}
{{- end }}

{{/* The pod annotations and labels an external mesh needs. */}}
{{- define "ordermesh.externalMeshAnnotations" -}}
{{- if eq .Values.externalMesh.provider "linkerd" }}
linkerd.io/inject: enabled
{{- end }}
{{- with .Values.externalMesh.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ordermesh.externalMeshLabels" -}}
{{- if eq .Values.externalMesh.provider "istio" }}
sidecar.istio.io/inject: "true"
{{- end }}
{{- with .Values.externalMesh.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Secret with a process's certificate: ctx = dict "root" $ "target" NAME */}}
{{- define "ordermesh.tlsSecret" -}}
{{- if .root.Values.tls.secretPrefix -}}
{{ .root.Values.tls.secretPrefix }}-{{ .target }}
{{- else -}}
{{ include "ordermesh.named" (dict "root" .root "suffix" (printf "tls-%s" .target)) }}
{{- end }}
{{- end }}

{{/*
The pod template shared by every Deployment.
ctx = dict "root" $ "component" NAME "block" VALUES "args" LIST "env" YAML
          "ports" LIST(dict name port) "probePort" PORT "gateway" BOOL
          "databaseSecret" BOOL (the pod reads the database Secret)
(gRPC probes take a port number, not a port name.) The chart-wide
extraVolumes, extraVolumeMounts, extraEnvFrom, initContainers and sidecars
come first, the block's own after them; the block's priorityClassName and
dnsConfig replace the chart-wide ones.
*/}}
{{- define "ordermesh.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
{{- $block := .block -}}
{{- $extraVolumes := concat (default (list) $v.extraVolumes) (default (list) $block.extraVolumes) -}}
{{- $extraVolumeMounts := concat (default (list) $v.extraVolumeMounts) (default (list) $block.extraVolumeMounts) -}}
{{- $extraEnvFrom := concat (default (list) $v.extraEnvFrom) (default (list) $block.extraEnvFrom) -}}
{{- $initContainers := concat (default (list) $v.initContainers) (default (list) $block.initContainers) -}}
{{- $sidecars := concat (default (list) $v.sidecars) (default (list) $block.sidecars) -}}
metadata:
  labels:
    {{- include "ordermesh.componentLabels" . | nindent 4 }}
    {{- with .block.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with (include "ordermesh.externalMeshLabels" $root) }}
    {{- . | nindent 4 }}
    {{- end }}
  annotations:
    {{- if $v.rolloutOnConfigChange }}
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if and .databaseSecret (include "ordermesh.makesDatabaseSecret" $root) }}
    {{- /* The database Secret the chart makes (database.urls): new URLs roll the pods that read it. */}}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- end }}
    {{- with .block.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with (include "ordermesh.externalMeshAnnotations" $root) }}
    {{- . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "ordermesh.componentServiceAccountName" (dict "root" $root "block" $block "component" .component) }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with (default $v.priorityClassName $block.priorityClassName) }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with (default $v.dnsConfig $block.dnsConfig) }}
  dnsConfig:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- if $v.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $key := $v.topologySpread.topologyKeys }}
    - maxSkew: {{ $v.topologySpread.maxSkew }}
      topologyKey: {{ $key }}
      whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "ordermesh.selectorLabels" (dict "root" $root "component" $.component) | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- with .block.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .block.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .block.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $initContainers }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: ordermesh
      image: {{ include "ordermesh.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      env:
        {{- include "ordermesh.commonEnv" $root | nindent 8 }}
        {{- .env | nindent 8 }}
        {{- with .block.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        {{- range .ports }}
        - name: {{ .name }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- end }}
        {{- if $v.metrics.enabled }}
        - name: metrics
          containerPort: {{ $v.metrics.port }}
          protocol: TCP
        {{- end }}
      startupProbe:
        grpc:
          port: {{ .probePort }}
          service: ""
        {{- toYaml $v.probes.startup | nindent 8 }}
      readinessProbe:
        grpc:
          port: {{ .probePort }}
          service: ""
        {{- toYaml $v.probes.readiness | nindent 8 }}
      # Liveness asks whether the process serves at all (not its database:
      # restarting pods cannot end a database outage); readiness follows it.
      livenessProbe:
        grpc:
          port: {{ .probePort }}
          service: liveness
        {{- toYaml $v.probes.liveness | nindent 8 }}
      resources:
        {{- toYaml .block.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/ordermesh/config
          readOnly: true
        {{- if and $v.auth.jwksSecret.name .gateway }}
        - name: jwks
          mountPath: /etc/ordermesh/jwks
          readOnly: true
        {{- end }}
        {{- if .tlsSecret }}
        # A directory mount, so a renewed certificate reaches the files
        # (reloaded within seconds, no restart).
        - name: tls
          mountPath: /etc/ordermesh/tls
          readOnly: true
        {{- end }}
        # The root filesystem is read-only: the data directory (development
        # signing key, SQLite when no database URL is set) and /tmp are scratch.
        - name: data
          mountPath: /data
        - name: tmp
          mountPath: /tmp
        {{- with $extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with $sidecars }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    # A directory mount (not subPath), so ConfigMap updates reach the files
    # and the policy watcher sees them.
    - name: config
      configMap:
        name: {{ include "ordermesh.configName" $root }}
    {{- if and $v.auth.jwksSecret.name .gateway }}
    - name: jwks
      secret:
        secretName: {{ $v.auth.jwksSecret.name }}
        items:
          - key: {{ $v.auth.jwksSecret.key }}
            path: {{ $v.auth.jwksSecret.key }}
    {{- end }}
    {{- if .tlsSecret }}
    - name: tls
      secret:
        secretName: {{ .tlsSecret }}
        defaultMode: 0400
    {{- end }}
    - name: data
      emptyDir:
        sizeLimit: 256Mi
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with $extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
