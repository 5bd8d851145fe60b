#!/usr/bin/env bash
# Checks the container image definition and the Helm chart with the real
# tools (.ci/tools.sh installs them into target/tools/bin): hadolint on the
# Dockerfile; helm lint --strict; helm template of the default values plus the
# required settings (examples/minimal.yaml), SingleBinary, production and demo
# values, SingleBinary with metrics, dashboard and alerts, and SingleBinary
# exporting traces (production.yaml exports them in Distributed mode), and
# every common knob (.ci/helm-knobs.yaml: extra volumes, env, init and sidecar
# containers, priority, DNS, rollout strategy, per-target ServiceAccounts, HPA
# behavior, load balancer fields, common labels and annotations, extraObjects,
# global.imageRegistry) in both modes and with the demo, each validated
# against the Kubernetes API schemas by kubernetes-validate --strict (the
# newest bundled version and the chart's minimum, 1.27); the chart's own
# promises (.ci/helm_checks.py: among them that every Deployment serves
# metrics when asked, that every container exports traces under its target's
# name with otel.endpoint and none without, each knob where it belongs and
# none in the default renders, checksum/secret following the chart-made
# Secret's URLs, and that the Grafana dashboard and the alerting rules
# name only metrics docs/metrics.md lists); the alerting rules and the
# dashboard's queries parsed by promtool and the alerts tested with it
# (.ci/ordermesh.rules.test.yaml); and wrong values refused at install time
# with a message naming the value.
set -euo pipefail
cd "$(dirname "$0")/.."
T=target/tools/bin
CHART=helm/ordermesh
OUT=target/helm
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== hadolint Dockerfile"
"$T/hadolint" Dockerfile

echo "== image: a stripped binary, OCI labels, one version"
python3 .ci/image_checks.py

echo "== helm lint --strict"
lint() {
  # Helm 4 logs each `fail` it meets while linting (the defaults meet the
  # "needs a database" check) at INFO level: shown only when lint fails.
  local log
  if ! log="$("$T/helm" lint --strict --quiet "$CHART" "$@" 2>&1)"; then
    echo "$log" >&2
    exit 1
  fi
  echo "linted: $CHART $*"
}
lint
for values in "$CHART"/examples/*.yaml; do
  lint -f "$values"
done
# Metrics, the Grafana dashboard and the alerts, all on (with the ServiceMonitor).
METRICS_ON=(--set metrics.enabled=true --set metrics.dashboard.enabled=true
  --set metrics.prometheusRule.enabled=true --set serviceMonitor.enabled=true)
lint -f "$CHART/examples/single-binary.yaml" "${METRICS_ON[@]}"
# Traces (helm_checks.py's SINGLE_BINARY_OTEL holds the same values).
OTEL_ON=(--set otel.endpoint=http://otel-collector.observability.svc:14317 --set otel.sampler=traceidratio
  --set otel.samplerArg=0.5 --set 'otel.resourceAttributes.deployment\.environment=ci' --set otel.resourceAttributes.team=shop)
lint -f "$CHART/examples/single-binary.yaml" "${OTEL_ON[@]}"
# Every common knob at once (helm_checks.py's check_knobs reads the same file),
# with database URLs so that the chart makes the database Secret.
KNOBS=(-f .ci/helm-knobs.yaml)
db_urls() {
  local p="$1"
  echo "database.urls.order=postgres://order:$p@pg:5432/order,database.urls.inventory=postgres://inventory:$p@pg:5432/inventory,database.urls.payment=postgres://payment:$p@pg:5432/payment"
}
URLS=(--set database.existingSecret= --set-string "$(db_urls first)")
OTHER_URLS=(--set database.existingSecret= --set-string "$(db_urls second)")
lint -f "$CHART/examples/minimal.yaml" "${KNOBS[@]}" "${URLS[@]}"
lint -f "$CHART/examples/single-binary.yaml" "${KNOBS[@]}" --set gateway.service.type=NodePort

echo "== helm template + kubernetes-validate --strict"
renders=()
for values in "$CHART"/examples/*.yaml; do
  name="$(basename "$values" .yaml)"
  "$T/helm" template ordermesh "$CHART" --namespace shop -f "$values" > "$OUT/$name.yaml"
  renders+=("$OUT/$name.yaml")
done
# Metrics in the other mode (production.yaml has them in Distributed mode).
"$T/helm" template ordermesh "$CHART" --namespace shop -f "$CHART/examples/single-binary.yaml" "${METRICS_ON[@]}" \
  > "$OUT/single-binary-metrics.yaml"
renders+=("$OUT/single-binary-metrics.yaml")
# Traces in the other mode too (production.yaml has them in Distributed mode).
"$T/helm" template ordermesh "$CHART" --namespace shop -f "$CHART/examples/single-binary.yaml" "${OTEL_ON[@]}" \
  > "$OUT/single-binary-otel.yaml"
renders+=("$OUT/single-binary-otel.yaml")
# The knobs in Distributed mode (a LoadBalancer gateway), SingleBinary (a
# NodePort one) and with the demo (ClusterIP); the first two again with other
# database URLs, for checksum/secret (helm_checks.py's KNOB_RENDERS, SECRET_CHANGED).
knobs() {
  local name="$1"
  shift
  "$T/helm" template ordermesh "$CHART" --namespace shop "$@" > "$OUT/$name.yaml"
  renders+=("$OUT/$name.yaml")
}
knobs knobs -f "$CHART/examples/minimal.yaml" "${KNOBS[@]}" "${URLS[@]}"
knobs knobs-secret-changed -f "$CHART/examples/minimal.yaml" "${KNOBS[@]}" "${OTHER_URLS[@]}"
knobs knobs-single-binary -f "$CHART/examples/single-binary.yaml" "${KNOBS[@]}" --set gateway.service.type=NodePort "${URLS[@]}"
knobs knobs-single-binary-secret-changed -f "$CHART/examples/single-binary.yaml" "${KNOBS[@]}" \
  --set gateway.service.type=NodePort "${OTHER_URLS[@]}"
# With every optional object too (metrics, dashboard, alerts, ingress, route,
# certificates), so that the knobs renders hold an object of every template.
knobs knobs-demo -f "$CHART/examples/demo.yaml" "${KNOBS[@]}" --set gateway.service.type=ClusterIP "${METRICS_ON[@]}" \
  --set tls.enabled=true --set tls.certManager.enabled=true --set tls.certManager.issuerRef.name=ca \
  --set ingress.enabled=true --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=gateway'
for version in 1.37.0 1.27.0; do
  # CRD kinds (HTTPRoute, ServiceMonitor, PrometheusRule, Certificate) have no
  # bundled schema: warned, not failed.
  "$T/kubernetes-validate" --strict --quiet -k "$version" "${renders[@]}"
done
echo "validated: ${renders[*]}"

echo "== a release name as long as Helm allows (53): every name fits a DNS label, none collide"
LONG=a-release-name-as-long-as-helm-allows-fifty-three-chr
# With the knobs: the per-target ServiceAccounts' names fit too.
"$T/helm" template "$LONG" "$CHART" --namespace shop -f "$CHART/examples/demo.yaml" --set tls.enabled=true \
  --set tls.certManager.enabled=true --set tls.certManager.issuerRef.name=ca "${METRICS_ON[@]}" "${KNOBS[@]}" \
  > "$OUT/long-name.yaml"
"$T/python" - "$OUT/long-name.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
names = [(d["kind"], d["metadata"]["name"]) for d in docs]
too_long = [n for n in names if len(n[1]) > 63]
assert not too_long, f"names over 63 characters: {too_long}"
assert len(set(names)) == len(names), f"colliding names: {sorted(names)}"
services = [n for k, n in names if k == "Service"]
assert all(n.endswith(("-gateway", "-order", "-inventory", "-payment", "-demo-postgresql", "-demo-nats")) for n in services), services
print(f"long release name: {len(names)} objects, longest name {max(len(n) for _, n in names)} characters")
PY

echo "== helm package"
"$T/helm" package "$CHART" --destination "$OUT" >/dev/null
packaged="$(ls "$OUT"/ordermesh-*.tgz)"
# The packaged chart (what a registry serves) renders the same objects.
"$T/helm" template ordermesh "$packaged" --namespace shop -f "$CHART/examples/minimal.yaml" \
  | cmp -s - "$OUT/minimal.yaml" || { echo "helm.sh: $packaged renders differently from $CHART" >&2; exit 1; }
echo "packaged: $packaged"

echo "== chart checks"
"$T/python" .ci/helm_checks.py "$OUT"

echo "== promtool: the alerting rules and the dashboard's queries parse, the alerts fire when they should"
"$T/promtool" check rules "$CHART/rules/ordermesh.rules.yaml"
"$T/promtool" check rules "$OUT/dashboard-queries.rules.yaml"
"$T/promtool" test rules .ci/ordermesh.rules.test.yaml

echo "== wrong values are refused at install"
refused() {
  local what="$1" message="$2"
  shift 2
  local err
  if err="$("$T/helm" template ordermesh "$CHART" "$@" 2>&1 >/dev/null)"; then
    echo "helm.sh: $what was accepted: helm template $*" >&2
    exit 1
  fi
  if ! grep -qF -- "$message" <<<"$err"; then
    echo "helm.sh: $what was refused without saying \"$message\":" >&2
    echo "$err" >&2
    exit 1
  fi
  echo "refused ($what): $(grep -F -m1 -- "$message" <<<"$err" | sed 's/^level=INFO msg="funcMap fail" message=//')"
}
MINIMAL=(-f "$CHART/examples/minimal.yaml")
refused "unknown deploymentMode" "at '/deploymentMode': value must be one of 'Distributed', 'SingleBinary'" \
  "${MINIMAL[@]}" --set deploymentMode=Monolith
refused "misspelt key" "at '/order': additional properties 'replica' not allowed" "${MINIMAL[@]}" --set order.replica=3
refused "wrong type" "at '/payment/replicas'" "${MINIMAL[@]}" --set-string payment.replicas=two
refused "not a PostgreSQL URL" "at '/database/urls/order'" \
  --set database.urls.order=mysql://db/order --set nats.url=nats://nats:4222 --set auth.jwksUrl=https://idp/jwks.json
refused "no database" "database: ordermesh needs one PostgreSQL database per service" \
  --set nats.url=nats://nats:4222 --set auth.jwksUrl=https://idp/jwks.json
refused "Distributed without NATS" "nats: Distributed mode needs NATS" \
  --set database.existingSecret=db --set auth.jwksUrl=https://idp/jwks.json
refused "production auth without keys" "auth: production mode needs the keys" \
  --set database.existingSecret=db --set nats.url=nats://nats:4222
refused "TLS in SingleBinary mode" "tls: mutual TLS is for Distributed mode" \
  "${MINIMAL[@]}" --set deploymentMode=SingleBinary --set tls.enabled=true
refused "cert-manager without an issuer" "tls: tls.certManager.enabled needs tls.certManager.issuerRef.name" \
  "${MINIMAL[@]}" --set tls.enabled=true --set tls.certManager.enabled=true
refused "health port on a service port" "ports: order.port and tls.healthPort are both 50051" \
  "${MINIMAL[@]}" --set tls.enabled=true --set tls.healthPort=50051
refused "metrics on the gateway's port" "ports: gateway.port and metrics.port are both 8080" \
  "${MINIMAL[@]}" --set metrics.enabled=true --set metrics.port=8080
refused "metrics on a service's port in SingleBinary mode" "ports: payment.port and metrics.port are both 50053" \
  "${MINIMAL[@]}" --set deploymentMode=SingleBinary --set metrics.enabled=true --set metrics.port=50053
refused "a dashboard without metrics" "metrics: metrics.dashboard.enabled needs metrics.enabled" \
  "${MINIMAL[@]}" --set metrics.dashboard.enabled=true
refused "alerts without metrics" "metrics: metrics.prometheusRule.enabled needs metrics.enabled" \
  "${MINIMAL[@]}" --set metrics.prometheusRule.enabled=true
refused "a dashboard label that is no label" "at '/metrics/dashboard/label/key'" \
  "${MINIMAL[@]}" --set metrics.enabled=true --set metrics.dashboard.enabled=true --set "metrics.dashboard.label.key=grafana dashboard"
refused "a reservation TTL the binary refuses" "at '/inventory/reservationTtlSecs': minimum" \
  "${MINIMAL[@]}" --set inventory.reservationTtlSecs=600
refused "plain-http JWKS in production" "auth: auth.jwksUrl http://idp.example.com/jwks.json is plain http" \
  --set database.existingSecret=db --set nats.url=nats://nats:4222 --set auth.jwksUrl=http://idp.example.com/jwks.json
refused "two development gateways without a shared key" "auth: development mode with more than one gateway pod needs auth.hs256Secret.name" \
  "${MINIMAL[@]}" --set auth.mode=development --set auth.jwksUrl= --set gateway.replicas=2
refused "HTTPRoute without a parent" "at '/httpRoute/parentRefs': minItems" "${MINIMAL[@]}" --set httpRoute.enabled=true
refused "an OTLP endpoint that is no URL" "at '/otel/endpoint': 'otel-collector:4317' does not match pattern" \
  "${MINIMAL[@]}" --set otel.endpoint=otel-collector:4317
refused "an OTLP endpoint over https" "otel: otel.endpoint https://otel-collector:4317 is https" \
  "${MINIMAL[@]}" --set otel.endpoint=https://otel-collector:4317
refused "an OTLP endpoint without its port" "otel: otel.endpoint http://otel-collector has no port" \
  "${MINIMAL[@]}" --set otel.endpoint=http://otel-collector
refused "a sampler the SDK does not know" "at '/otel/sampler': value must be one of 'always_on'" \
  "${MINIMAL[@]}" --set otel.endpoint=http://otel-collector:4317 --set otel.sampler=ratio
refused "a sampler ratio above 1" "at '/otel/samplerArg'" \
  "${MINIMAL[@]}" --set otel.endpoint=http://otel-collector:4317 --set otel.sampler=traceidratio --set otel.samplerArg=1.5
refused "a sampler ratio the sampler ignores" "otel: otel.samplerArg 0.1 applies to the traceidratio samplers only" \
  "${MINIMAL[@]}" --set otel.endpoint=http://otel-collector:4317 --set otel.samplerArg=0.1
refused "a rollout strategy Kubernetes does not know" "at '/strategy/type': value must be one of 'RollingUpdate', 'Recreate'" \
  "${MINIMAL[@]}" --set strategy.type=BlueGreen
refused "a misspelt per-target ServiceAccount key" "at '/payment/serviceAccount': additional properties 'annotation' not allowed" \
  "${MINIMAL[@]}" --set payment.serviceAccount.annotation.a=b
refused "an externalTrafficPolicy Kubernetes does not know" "at '/gateway/service/externalTrafficPolicy'" \
  "${MINIMAL[@]}" --set gateway.service.externalTrafficPolicy=local
refused "an HPA memory target above 100%" "at '/order/autoscaling/targetMemoryUtilizationPercentage'" \
  "${MINIMAL[@]}" --set order.autoscaling.targetMemoryUtilizationPercentage=150
refused "a sidecar without an image" "at '/sidecars/0': missing property 'image'" \
  "${MINIMAL[@]}" --set 'sidecars[0].name=proxy'
refused "an image registry given as a URL" "at '/global/imageRegistry'" \
  "${MINIMAL[@]}" --set global.imageRegistry=https://mirror.example.com
refused "a resource attribute with a comma" "at '/otel/resourceAttributes/team'" \
  "${MINIMAL[@]}" --set otel.endpoint=http://otel-collector:4317 --set-string 'otel.resourceAttributes.team=a\,b'
