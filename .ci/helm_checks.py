"""Structural checks of the rendered Helm chart (target/helm/*.yaml), beyond
what the Kubernetes schemas say: the promises the chart makes in its README.

Usage: python .ci/helm_checks.py RENDER_DIR
Renders expected: minimal, production, demo, mtls (Distributed), single-binary,
single-binary-metrics (SingleBinary with metrics, dashboard and alerts) and
single-binary-otel (SingleBinary with the values in SINGLE_BINARY_OTEL).

Metrics: every Deployment rendered with metrics.enabled serves them
(ORDERMESH_METRICS_LISTEN and a port named `metrics`), none rendered without
does; the dashboard (dashboards/ordermesh.json) and the alerting rules
(rules/ordermesh.rules.yaml) name only metrics that docs/metrics.md lists, and
render into their ConfigMap and PrometheusRule unchanged. The dashboard's
queries are written, Grafana variables substituted, as recording rules to
RENDER_DIR/dashboard-queries.rules.yaml for `promtool check rules` to parse
(.ci/helm.sh runs it).

Traces: with otel.endpoint every ordermesh container carries the OpenTelemetry
SDK's variables (the endpoint, OTEL_SERVICE_NAME ordermesh-<target> for
`serve <target>` and ordermesh for `up`, the sampler, its argument and the
resource attributes when set) and every NetworkPolicy of the release admits
the endpoint's port (to networkPolicy.egress.otel's peers when given);
without it no OTEL_ variable appears in any object.

Common knobs (check_knobs): the knobs-* renders are .ci/helm-knobs.yaml on
top of examples/minimal.yaml (Distributed, database.urls: the chart makes
the Secret), single-binary.yaml (with database.urls) and demo.yaml (with
metrics, dashboard, alerts, ingress, route and certificates, so that the
three hold an object of every template); each
*-secret-changed render is its pair with other database URLs. Every object
the chart makes carries commonLabels and commonAnnotations; every target's
pod the chart-wide extraVolumes, extraVolumeMounts, extraEnvFrom,
initContainers and sidecars followed by its own, the priorityClassName,
dnsConfig and strategy (its own or the chart-wide one), revisionHistoryLimit,
and its ServiceAccount (made, with the merged annotations); every image the
chart runs is from global.imageRegistry; HPAs carry behavior and the memory
target; the gateway Service (only) the load balancer fields its type
admits; extraObjects render through tpl; and checksum/secret rolls exactly
the pods that read the chart-made database Secret when its URLs change.
The default renders carry none of these (check_no_knobs).
"""

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "ordermesh"
METRICS_DOC = REPO / "docs" / "metrics.md"
DASHBOARD = CHART / "dashboards" / "ordermesh.json"
RULES = CHART / "rules" / "ordermesh.rules.yaml"
METRICS_PORT = 9090
KNOBS = REPO / ".ci" / "helm-knobs.yaml"
# render: (deploymentMode, the gateway Service's type); what .ci/helm.sh passes.
KNOB_RENDERS = {
    "knobs": ("Distributed", "LoadBalancer"),
    "knobs-single-binary": ("SingleBinary", "NodePort"),
    "knobs-demo": ("Distributed", "ClusterIP"),
}
# Renders equal to their pair but for the chart-made Secret's URLs.
SECRET_CHANGED = {"knobs": "knobs-secret-changed", "knobs-single-binary": "knobs-single-binary-secret-changed"}
LB_FIELDS = ("loadBalancerClass", "loadBalancerSourceRanges")
# What .ci/helm.sh passes for the single-binary-otel render (--set), besides
# examples/single-binary.yaml; production's otel values are examples/production.yaml's.
SINGLE_BINARY_OTEL = {
    "endpoint": "http://otel-collector.observability.svc:14317",
    "sampler": "traceidratio",
    "samplerArg": "0.5",
    "resourceAttributes": {"deployment.environment": "ci", "team": "shop"},
}

failures = []
passed = 0


def check(name, condition, detail=""):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(f"{name}: {detail}")


def load(directory, render):
    docs = [d for d in yaml.safe_load_all((directory / f"{render}.yaml").read_text()) if d]
    return docs


def load_sourced(directory, render):
    """[(template, doc)]: each rendered object with the template it came from."""
    found = []
    for chunk in re.split(r"^---\s*$", (directory / f"{render}.yaml").read_text(), flags=re.M):
        source = re.search(r"^# Source: \S+?/templates/(\S+)", chunk, flags=re.M)
        doc = yaml.safe_load(chunk)
        if doc:
            found.append((source.group(1) if source else "?", doc))
    return found


def of_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_pod(render, name, pod, port):
    spec = pod["spec"]
    check(f"{render}/{name} no service account token", spec.get("automountServiceAccountToken") is False)
    check(f"{render}/{name} pod runs as non-root", spec["securityContext"].get("runAsNonRoot") is True)
    container = spec["containers"][0]
    sc = container["securityContext"]
    check(f"{render}/{name} read-only root", sc.get("readOnlyRootFilesystem") is True)
    check(f"{render}/{name} no privilege escalation", sc.get("allowPrivilegeEscalation") is False)
    check(f"{render}/{name} drops ALL capabilities", sc.get("capabilities", {}).get("drop") == ["ALL"])
    check(f"{render}/{name} seccomp RuntimeDefault", sc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
    for probe, service in (("startupProbe", ""), ("readinessProbe", ""), ("livenessProbe", "liveness")):
        grpc = container.get(probe, {}).get("grpc", {})
        check(f"{render}/{name} {probe} is gRPC health {service!r} on {port}",
              grpc == {"port": port, "service": service}, grpc)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in ("/data", "/tmp"):
        check(f"{render}/{name} writable {path} is an emptyDir", "emptyDir" in volumes.get(mounts.get(path), {}))
    check(f"{render}/{name} config mounted as a directory", mounts.get("/etc/ordermesh/config") == "config")
    return container


def secret_ref(env, name):
    return "secretKeyRef" in env.get(name, {}).get("valueFrom", {})


def check_distributed(directory, render):
    docs = load(directory, render)
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    policies = of_kind(docs, "NetworkPolicy")
    ports = {"gateway": 8080, "order": 50051, "inventory": 50052, "payment": 50053}
    for target, port in ports.items():
        name = f"ordermesh-{target}"
        deployment = deployments.get(name)
        check(f"{render}: Deployment {name}", deployment is not None)
        if deployment is None:
            continue
        container = check_pod(render, name, deployment["spec"]["template"], port)
        check(f"{render}/{name} runs `serve {target}`", container["args"] == ["serve", target], container["args"])
        env = env_of(container)
        check(f"{render}/{name} listens on {port}", env["ORDERMESH_LISTEN"]["value"] == f"0.0.0.0:{port}")
        # Only the services publish and consume events; the NATS Secret may
        # hold credentials the gateway has no use for.
        check(f"{render}/{name} gets the NATS URL only if it is a service",
              ("ORDERMESH_NATS_URL" in env) == (target != "gateway"), sorted(env))
        if target != "gateway":
            check(f"{render}/{name} database URL from a Secret", secret_ref(env, "ORDERMESH_DATABASE_URL"))
            service = services.get(name, {})
            check(f"{render}: Service {name} is headless", service.get("spec", {}).get("clusterIP") == "None")
        for variable in env.values():
            check(f"{render}/{name} {variable['name']} holds no credentials",
                  "postgres://" not in str(variable.get("value", "")))
    gateway_service = services.get("ordermesh-gateway", {}).get("spec", {})
    check(f"{render}: gateway Service is not headless", gateway_service.get("clusterIP") != "None")

    # Network policy: who may call whom, and who reaches PostgreSQL.
    def ingress_components(policy, port):
        """Who may reach `port` (the metrics port has rules of its own)."""
        sources = set()
        for rule in policy["spec"].get("ingress", []):
            if port not in {p["port"] for p in rule.get("ports", [])}:
                continue
            if not rule.get("from"):
                sources.add("*")
            for peer in rule.get("from", []):
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                sources.add(labels.get("app.kubernetes.io/component", "external"))
        return sources

    def egress_ports(policy):
        return {p["port"] for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}

    expected_callers = {"order": {"gateway"}, "inventory": {"gateway", "order"}, "payment": {"gateway", "order"}}
    for target, callers in expected_callers.items():
        policy = policies.get(f"ordermesh-{target}")
        check(f"{render}: NetworkPolicy for {target}", policy is not None)
        if policy:
            sources = ingress_components(policy, ports[target])
            check(f"{render}: only {sorted(callers)} call {target}", sources == callers, sources)
            check(f"{render}: {target} reaches PostgreSQL", 5432 in egress_ports(policy) or render == "demo")
            check(f"{render}: {target} both directions restricted",
                  set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"})
    gateway = policies.get("ordermesh-gateway")
    check(f"{render}: NetworkPolicy for the gateway", gateway is not None)
    if gateway:
        check(f"{render}: gateway reaches no database", 5432 not in egress_ports(gateway), egress_ports(gateway))
        check(f"{render}: gateway reaches no NATS", not {4222} & egress_ports(gateway), egress_ports(gateway))
        check(f"{render}: gateway calls the three services",
              {50051, 50052, 50053} <= egress_ports(gateway), egress_ports(gateway))
        # The gateway fetches auth.jwksUrl: its port is open (443 for https
        # unless the URL names one), else no rule for it.
        values = yaml.safe_load((CHART / "examples" / f"{render}.yaml").read_text()) or {}
        jwks_url = (values.get("auth") or {}).get("jwksUrl", "")
        if jwks_url:
            match = re.match(r"^https?://(\[[^\]]*\]|[^/:]*)(:(\d+))?", jwks_url)
            port = int(match.group(3)) if match.group(3) else (443 if jwks_url.startswith("https://") else 80)
            check(f"{render}: gateway reaches the JWKS URL's port {port}", port in egress_ports(gateway),
                  egress_ports(gateway))
        else:
            extra = {p["port"] for rule in (values.get("networkPolicy") or {}).get("egress", {}).get("gateway", [])
                     for p in rule.get("ports", [])}
            check(f"{render}: no JWKS egress without auth.jwksUrl", 443 not in egress_ports(gateway) - extra,
                  egress_ports(gateway))
    return docs


def documented_metrics():
    """{name: type} from the table under docs/metrics.md's "Every metric"."""
    metrics = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = re.match(r"\| `((?:ordermesh|process)_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", line)
        if match:
            metrics[match.group(1)] = match.group(2)
    return metrics


METRIC_NAME = re.compile(r"\b(?:ordermesh|process)_[a-z0-9_]+")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def check_metric_names(what, texts, metrics):
    """Every metric name in `texts` ((where, text) pairs) is documented: a
    counter or gauge by its name, a histogram by one of its series. Returns the
    documented names used."""
    used = set()
    for where, text in texts:
        for name in METRIC_NAME.findall(text):
            base = next((name[: -len(s)] for s in HISTOGRAM_SERIES if name.endswith(s)), None)
            if metrics.get(name) in ("counter", "gauge"):
                used.add(name)
            elif base is not None and metrics.get(base) == "histogram":
                used.add(base)
            elif metrics.get(name) == "histogram":
                check(f"{what}: {where} queries the histogram {name} by a series of it", False,
                      f"{name} has no series of that name: use {name}_bucket, _sum or _count")
            else:
                check(f"{what}: {where} names only metrics docs/metrics.md lists", False,
                      f"{name} is not in docs/metrics.md's table")
    return used


def strings(node, path=""):
    """Every string in a JSON/YAML document, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path or ".", node


def check_dashboard(directory, metrics):
    text = DASHBOARD.read_text()
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as e:
        check(f"{DASHBOARD.name} is JSON", False, e)
        return None
    check(f"{DASHBOARD.name} has a uid and a title", dashboard.get("uid") and dashboard.get("title"))
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    datasource = variables.get("datasource", {})
    check(f"{DASHBOARD.name}: a $datasource variable of Prometheus data sources",
          datasource.get("type") == "datasource" and datasource.get("query") == "prometheus", datasource)
    panels = list(dashboard.get("panels", []))
    for row in [p for p in panels if p.get("type") == "row"]:
        panels.extend(row.get("panels", []))
    ids = [p.get("id") for p in panels]
    check(f"{DASHBOARD.name}: panel ids are unique", len(ids) == len(set(ids)), ids)
    cells = {}
    queries = []
    for panel in panels:
        title = panel.get("title", "?")
        pos = panel.get("gridPos", {})
        x, y, w, h = (pos.get(k, 0) for k in ("x", "y", "w", "h"))
        check(f"{DASHBOARD.name}: panel {title!r} fits the 24-column grid", x >= 0 and w > 0 and h > 0 and x + w <= 24, pos)
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            cells.setdefault(cell, []).append(title)
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets", [])
        check(f"{DASHBOARD.name}: panel {title!r} has queries", bool(targets))
        for source in [panel] + targets:
            check(f"{DASHBOARD.name}: panel {title!r} queries $datasource",
                  source.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, source.get("datasource"))
        for target in targets:
            check(f"{DASHBOARD.name}: panel {title!r} query {target.get('refId')} has an expr",
                  bool(target.get("expr", "").strip()))
            queries.append((panel.get("id"), target.get("refId", "A"), target.get("expr", "")))
    overlaps = sorted({tuple(titles) for titles in cells.values() if len(titles) > 1})
    check(f"{DASHBOARD.name}: no two panels overlap", not overlaps, overlaps)
    used = check_metric_names(DASHBOARD.name, strings(dashboard), metrics)
    check(f"{DASHBOARD.name} queries the metrics", len(used) >= 10, sorted(used))
    unused = sorted(set(metrics) - used)
    if unused:
        print(f"helm_checks: note: the dashboard shows no panel of {', '.join(unused)}")

    # Each query as a recording rule, for `promtool check rules` to parse:
    # Grafana's interval macros become 5m, every other variable a regex.
    def promql(expr):
        expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
        return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)

    group = {"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:panel{panel_id}_{ref}", "expr": promql(expr)} for panel_id, ref, expr in queries]}
    (directory / "dashboard-queries.rules.yaml").write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    return dashboard


def check_rules(metrics):
    rules_file = yaml.safe_load(RULES.read_text())
    rules = [r for g in rules_file.get("groups", []) for r in g.get("rules", [])]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    texts = []
    for name, rule in alerts.items():
        check(f"{RULES.name}: {name} has a severity",
              rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), rule.get("labels"))
        annotations = rule.get("annotations", {})
        check(f"{RULES.name}: {name} has a summary and a description",
              bool(annotations.get("summary")) and bool(annotations.get("description")), annotations)
        texts.append((f"{name}.expr", str(rule.get("expr", ""))))
        texts.extend((f"{name}.annotations.{k}", str(v)) for k, v in annotations.items())
    used = check_metric_names(RULES.name, texts, metrics)
    for metric in ("ordermesh_mesh_breaker_state", "ordermesh_sagas_needing_attention",
                   "ordermesh_outbox_oldest_age_seconds", "ordermesh_consumer_dead_lettered_total",
                   "ordermesh_gateway_requests_total", "ordermesh_rpc_server_requests_total"):
        check(f"{RULES.name}: an alert on {metric}",
              any(metric in str(r.get("expr", "")) for r in alerts.values()), sorted(used))
    return rules_file


def check_metrics(directory, render, enabled, dashboard, rules_file):
    """With metrics.enabled every Deployment serves them on the `metrics` port
    its Services expose and the ServiceMonitor scrapes; without, none does."""
    docs = load(directory, render)
    ours = {name: d for name, d in of_kind(docs, "Deployment").items() if "-demo-" not in name}
    check(f"{render}: Deployments to check", bool(ours))
    listen = f"0.0.0.0:{METRICS_PORT}"
    for name, deployment in ours.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container).get("ORDERMESH_METRICS_LISTEN", {})
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if enabled:
            check(f"{render}/{name} serves metrics on {listen}", env.get("value") == listen, env)
            check(f"{render}/{name} has the port `metrics`", ports.get("metrics") == METRICS_PORT, ports)
        else:
            check(f"{render}/{name} serves no metrics", not env and "metrics" not in ports, (env, ports))
    for name, service in of_kind(docs, "Service").items():
        if "-demo-" in name:
            continue
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        if enabled:
            check(f"{render}: Service {name} exposes `metrics`",
                  ports.get("metrics", {}).get("targetPort") == "metrics", ports)
        else:
            check(f"{render}: Service {name} exposes no metrics port", "metrics" not in ports, ports)
    for name, policy in of_kind(docs, "NetworkPolicy").items():
        if "-demo-" in name:
            continue
        allowed = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
        check(f"{render}: NetworkPolicy {name} admits scrapes", (METRICS_PORT in allowed) == enabled, allowed)
    if not enabled:
        for kind in ("ServiceMonitor", "PrometheusRule"):
            check(f"{render}: no {kind}", not of_kind(docs, kind))
        return
    for monitor in of_kind(docs, "ServiceMonitor").values():
        endpoints = monitor["spec"]["endpoints"]
        check(f"{render}: the ServiceMonitor scrapes `metrics`", [e["port"] for e in endpoints] == ["metrics"], endpoints)
    dashboards = [d for d in of_kind(docs, "ConfigMap").values() if "ordermesh.json" in d.get("data", {})]
    check(f"{render}: one dashboard ConfigMap", len(dashboards) == 1, len(dashboards))
    for configmap in dashboards:
        check(f"{render}: the dashboard ConfigMap carries the sidecar's label",
              configmap["metadata"]["labels"].get("grafana_dashboard") == "1", configmap["metadata"]["labels"])
        check(f"{render}: the dashboard ConfigMap holds dashboards/ordermesh.json",
              json.loads(configmap["data"]["ordermesh.json"]) == dashboard)
    rules = list(of_kind(docs, "PrometheusRule").values())
    check(f"{render}: one PrometheusRule", len(rules) == 1, len(rules))
    for rule in rules:
        check(f"{render}: the PrometheusRule's spec is rules/ordermesh.rules.yaml (what promtool checks)",
              rule["spec"] == rules_file)


def otel_values(render):
    """The otel values a render was made with (None: otel off)."""
    if render == "single-binary-otel":
        return SINGLE_BINARY_OTEL
    if render == "production":
        values = yaml.safe_load((CHART / "examples" / "production.yaml").read_text())
        defaults = yaml.safe_load((CHART / "values.yaml").read_text())["otel"]
        return {**defaults, **values["otel"]}
    return None


def check_otel(directory, render):
    """With otel.endpoint every ordermesh container exports traces under its
    target's name and every NetworkPolicy admits the collector's port;
    without, no OTEL_ variable is set anywhere."""
    docs = load(directory, render)
    otel = otel_values(render)
    if otel is None:
        found = [(where, text) for doc in docs for where, text in strings(doc) if "OTEL_" in text]
        check(f"{render}: no OTEL_ variable anywhere (otel.endpoint is empty)", not found, found)
        return
    endpoint = otel["endpoint"]
    match = re.match(r"^http://(\[[^\]]*\]|[^/:]*):([0-9]+)", endpoint)
    check(f"{render}: otel.endpoint {endpoint} names its port", match is not None)
    port = int(match.group(2)) if match else None
    attributes = ",".join(f"{k}={v}" for k, v in sorted(otel["resourceAttributes"].items()))
    ours = {name: d for name, d in of_kind(docs, "Deployment").items() if "-demo-" not in name}
    check(f"{render}: Deployments to check", bool(ours))
    for name, deployment in ours.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            args = container.get("args", [])
            # The binary's own default names: `serve order` -> ordermesh-order, `up` -> ordermesh.
            service = "ordermesh" if args == ["up"] else f"ordermesh-{args[-1]}"
            values = {k: e.get("value") for k, e in env_of(container).items() if k.startswith("OTEL_")}
            expected = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_SERVICE_NAME": service,
                "OTEL_TRACES_SAMPLER": otel["sampler"],
            }
            if str(otel["samplerArg"]) != "":
                expected["OTEL_TRACES_SAMPLER_ARG"] = str(otel["samplerArg"])
            if attributes:
                expected["OTEL_RESOURCE_ATTRIBUTES"] = attributes
            check(f"{render}/{name} container {container['name']} ({' '.join(args)}) exports traces as {service}",
                  values == expected, {"rendered": values, "expected": expected})
    policies = {name: p for name, p in of_kind(docs, "NetworkPolicy").items() if "-demo-" not in name}
    check(f"{render}: NetworkPolicies to check", bool(policies))
    peers = (yaml.safe_load((CHART / "examples" / "production.yaml").read_text())["networkPolicy"]["egress"]["otel"]
             if render == "production" else None)
    for name, policy in policies.items():
        rules = [r for r in policy["spec"].get("egress", [])
                 if {"port": port, "protocol": "TCP"} in r.get("ports", [])]
        check(f"{render}: NetworkPolicy {name} admits the collector's port {port}", bool(rules),
              policy["spec"].get("egress"))
        check(f"{render}: NetworkPolicy {name} reaches the collector at networkPolicy.egress.otel's peers",
              any(r.get("to") == peers for r in rules), rules)


def knob_components(mode):
    """{Deployment name: (values block key, component)} of the ordermesh pods."""
    if mode == "SingleBinary":
        return {"ordermesh": ("singleBinary", "single-binary")}
    return {f"ordermesh-{t}": (t, t) for t in ("gateway", "order", "inventory", "payment")}


def pod_annotation(deployment, key):
    return deployment["spec"]["template"]["metadata"].get("annotations", {}).get(key)


def check_knobs(directory, render, mode, service_type):
    knobs = yaml.safe_load(KNOBS.read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    registry = knobs["global"]["imageRegistry"]
    common_labels, common_annotations = knobs["commonLabels"], knobs["commonAnnotations"]
    sourced = load_sourced(directory, render)
    docs = [d for _, d in sourced]
    extra = [d for source, d in sourced if source == "extra-objects.yaml"]
    ours = [(source, d) for source, d in sourced if source != "extra-objects.yaml"]
    gateway_service_annotations = knobs["gateway"]["service"]["annotations"]

    # commonLabels and commonAnnotations: every object the chart makes (an
    # object's own annotation wins: the gateway Service's example.com/tier).
    for source, doc in ours:
        what = f"{render}: {doc['kind']} {doc['metadata']['name']} ({source})"
        labels = doc["metadata"].get("labels", {})
        annotations = doc["metadata"].get("annotations", {})
        check(f"{what} carries commonLabels", common_labels.items() <= labels.items(), labels)
        is_gateway_service = (doc["kind"], doc["metadata"]["name"]) == ("Service", "ordermesh-gateway")
        own = gateway_service_annotations if is_gateway_service else {}
        expected = {**common_annotations, **own}
        check(f"{what} carries commonAnnotations (its own win)", expected.items() <= annotations.items(), annotations)
        template = doc.get("spec", {}).get("template", {}).get("metadata", {})
        if template:
            check(f"{what}: its pods carry commonLabels", common_labels.items() <= template.get("labels", {}).items(),
                  template.get("labels"))

    # extraObjects: each rendered, through tpl.
    check(f"{render}: every extraObject rendered", len(extra) == len(knobs["extraObjects"]),
          [(d["kind"], d["metadata"]["name"]) for d in extra])
    unrendered = [(where, text) for doc in extra for where, text in strings(doc) if "{{" in text]
    check(f"{render}: extraObjects rendered through tpl", not unrendered, unrendered)
    extra_by_name = {(d["kind"], d["metadata"]["name"]): d for d in extra}
    configmap = extra_by_name.get(("ConfigMap", "ordermesh-extra-config"), {})
    check(f"{render}: the map extraObject with the release's name and namespace",
          configmap.get("data", {}).get("release") == "ordermesh" and configmap["metadata"].get("namespace") == "shop",
          configmap)
    pdb = extra_by_name.get(("PodDisruptionBudget", "ordermesh-extra-pdb"), {})
    check(f"{render}: the string extraObject with the chart's labels helper",
          common_labels.items() <= pdb.get("metadata", {}).get("labels", {}).items(), pdb)

    # Every target's pod.
    deployments = of_kind(docs, "Deployment")
    accounts = of_kind(docs, "ServiceAccount")
    expected_accounts = {}
    user_images = set()
    for name, (key, component) in knob_components(mode).items():
        deployment = deployments.get(name)
        check(f"{render}: Deployment {name}", deployment is not None)
        if deployment is None:
            continue
        block = knobs.get(key, {})
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        container = pod["containers"][0]

        def both(field):
            return knobs.get(field, []) + block.get(field, [])

        volumes = both("extraVolumes")
        check(f"{render}/{name}: extraVolumes, chart-wide then its own, after the chart's",
              pod["volumes"][-len(volumes):] == volumes and pod["volumes"][0]["name"] == "config",
              [v["name"] for v in pod["volumes"]])
        mounts = both("extraVolumeMounts")
        check(f"{render}/{name}: extraVolumeMounts in the ordermesh container, after the chart's",
              container["volumeMounts"][-len(mounts):] == mounts and container["volumeMounts"][0]["name"] == "config",
              container["volumeMounts"])
        check(f"{render}/{name}: extraEnvFrom, chart-wide then its own", container.get("envFrom") == both("extraEnvFrom"),
              container.get("envFrom"))
        check(f"{render}/{name}: initContainers, chart-wide then its own",
              pod.get("initContainers") == both("initContainers"), pod.get("initContainers"))
        check(f"{render}/{name}: ordermesh first, then the sidecars, chart-wide then its own",
              container["name"] == "ordermesh" and pod["containers"][1:] == both("sidecars"),
              [c["name"] for c in pod["containers"]])
        user_images |= {c["image"] for c in both("initContainers") + both("sidecars")}
        check(f"{render}/{name}: priorityClassName", pod.get("priorityClassName")
              == (block.get("priorityClassName") or knobs["priorityClassName"]), pod.get("priorityClassName"))
        check(f"{render}/{name}: dnsConfig", pod.get("dnsConfig") == (block.get("dnsConfig") or knobs["dnsConfig"]),
              pod.get("dnsConfig"))
        check(f"{render}/{name}: strategy", spec.get("strategy") == (block.get("strategy") or knobs["strategy"]),
              spec.get("strategy"))
        check(f"{render}/{name}: revisionHistoryLimit", spec.get("revisionHistoryLimit") == knobs["revisionHistoryLimit"],
              spec.get("revisionHistoryLimit"))
        check(f"{render}/{name}: the ordermesh image from global.imageRegistry, its own registry replaced",
              container["image"] == f"{registry}/ordermesh:{app_version}", container["image"])
        # Its ServiceAccount: its own with a name or annotations, else the shared one.
        own = block.get("serviceAccount", {})
        account = own.get("name") or (f"ordermesh-{component}" if own.get("annotations") else "ordermesh")
        check(f"{render}/{name}: runs as the ServiceAccount {account}", pod.get("serviceAccountName") == account,
              pod.get("serviceAccountName"))
        expected_accounts.setdefault(account, {**common_annotations, **knobs["serviceAccount"]["annotations"]})
        expected_accounts[account].update(own.get("annotations", {}))
        # checksum/secret: on the pods that read the chart-made database Secret.
        reads_secret = name != "ordermesh-gateway"
        checksum = pod_annotation(deployment, "checksum/secret")
        check(f"{render}/{name}: checksum/secret {'set' if reads_secret else 'absent (no database)'}",
              bool(checksum) == reads_secret, checksum)
        if render in SECRET_CHANGED and reads_secret:
            changed = of_kind(load(directory, SECRET_CHANGED[render]), "Deployment").get(name, {})
            other = pod_annotation(changed, "checksum/secret")
            check(f"{render}/{name}: other database URLs, another checksum/secret", other not in (None, checksum), other)
            check(f"{render}/{name}: other database URLs, the same checksum/config",
                  pod_annotation(changed, "checksum/config") == pod_annotation(deployment, "checksum/config"))
    check(f"{render}: the ServiceAccounts the pods run as, and no other",
          set(accounts) == set(expected_accounts), sorted(accounts))
    for account, annotations in expected_accounts.items():
        got = accounts.get(account, {}).get("metadata", {}).get("annotations")
        check(f"{render}: ServiceAccount {account}'s annotations (the target's over the chart-wide ones)",
              got == annotations, got)

    # Every image the chart runs (the test pod's, the demo's) from the mirror.
    for doc in docs:
        pods = {"Deployment": lambda d: d["spec"]["template"]["spec"], "Pod": lambda d: d["spec"]}
        pod = pods[doc["kind"]](doc) if doc["kind"] in pods else {}
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            if container["image"] in user_images:
                continue
            check(f"{render}: {doc['kind']} {doc['metadata']['name']} container {container['name']} from {registry}",
                  container["image"].startswith(f"{registry}/"), container["image"])
    if "knobs-demo" == render:
        images = {c["image"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
        for demo in ("postgresql", "nats"):
            check(f"{render}: the demo {demo} image with the registry prepended",
                  f"{registry}/{defaults['demo'][demo]['image']}" in images, sorted(images))

    # HPAs (Distributed): behavior and the memory target, where set.
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    if mode == "Distributed":
        for target in ("gateway", "order", "inventory", "payment"):
            scaling = knobs.get(target, {}).get("autoscaling", {})
            hpa = hpas.get(f"ordermesh-{target}")
            check(f"{render}: an HPA for {target} only with autoscaling.enabled",
                  (hpa is not None) == bool(scaling.get("enabled")))
            if hpa is None:
                continue
            check(f"{render}: HPA {target} behavior", hpa["spec"].get("behavior") == scaling.get("behavior"),
                  hpa["spec"].get("behavior"))
            targets = {m["resource"]["name"]: m["resource"]["target"].get("averageUtilization")
                       for m in hpa["spec"]["metrics"]}
            expected = {"cpu": defaults[target]["autoscaling"]["targetCPUUtilizationPercentage"]}
            if scaling.get("targetMemoryUtilizationPercentage"):
                expected["memory"] = scaling["targetMemoryUtilizationPercentage"]
            check(f"{render}: HPA {target} metrics", targets == expected, targets)
    else:
        check(f"{render}: no HPA in SingleBinary mode", not hpas)

    # The load balancer fields: on the gateway Service only, as its type admits.
    service_knobs = knobs["gateway"]["service"]
    for name, service in of_kind(docs, "Service").items():
        spec = service["spec"]
        if name != "ordermesh-gateway":
            present = [f for f in LB_FIELDS + ("externalTrafficPolicy",) if f in spec]
            check(f"{render}: Service {name} has no load balancer fields", not present, present)
            continue
        check(f"{render}: the gateway Service is a {service_type}", spec.get("type") == service_type, spec.get("type"))
        for field in LB_FIELDS:
            expected = service_knobs[field] if service_type == "LoadBalancer" else None
            check(f"{render}: gateway Service {field} {'set' if expected else 'absent'} ({service_type})",
                  spec.get(field) == expected, spec.get(field))
        expected = service_knobs["externalTrafficPolicy"] if service_type in ("LoadBalancer", "NodePort") else None
        check(f"{render}: gateway Service externalTrafficPolicy {'set' if expected else 'absent'} ({service_type})",
              spec.get("externalTrafficPolicy") == expected, spec.get("externalTrafficPolicy"))


def check_no_knobs(directory, render):
    """The defaults render what the chart rendered before the knobs existed."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    sourced = load_sourced(directory, render)
    docs = [d for _, d in sourced]
    check(f"{render}: no extraObjects", not [s for s, _ in sourced if s == "extra-objects.yaml"])
    check(f"{render}: one ServiceAccount, the shared one",
          list(of_kind(docs, "ServiceAccount")) in ([], ["ordermesh"]), list(of_kind(docs, "ServiceAccount")))
    for name, deployment in of_kind(docs, "Deployment").items():
        if "-demo-" in name:
            continue
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        check(f"{render}/{name}: the default strategy and revisionHistoryLimit",
              spec["strategy"] == defaults["strategy"] and spec["revisionHistoryLimit"] == 5, spec["strategy"])
        present = [f for f in ("initContainers", "priorityClassName", "dnsConfig") if f in pod]
        check(f"{render}/{name}: no initContainers, priorityClassName or dnsConfig", not present, present)
        check(f"{render}/{name}: one container, no envFrom",
              len(pod["containers"]) == 1 and "envFrom" not in pod["containers"][0], [c["name"] for c in pod["containers"]])
        check(f"{render}/{name}: the chart's volumes only",
              {v["name"] for v in pod["volumes"]} <= {"config", "jwks", "tls", "data", "tmp"}, pod["volumes"])
        check(f"{render}/{name}: runs as the shared ServiceAccount", pod["serviceAccountName"] == "ordermesh")
        check(f"{render}/{name}: the image as given", not pod["containers"][0]["image"].startswith("mirror."))
    for name, hpa in of_kind(docs, "HorizontalPodAutoscaler").items():
        check(f"{render}: HPA {name} on CPU only, Kubernetes' behavior",
              [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"] and "behavior" not in hpa["spec"])
    gateway = of_kind(docs, "Service")["ordermesh-gateway"]["spec"]
    present = [f for f in LB_FIELDS + ("externalTrafficPolicy",) if f in gateway]
    check(f"{render}: gateway Service without load balancer fields", not present, present)


def main():
    directory = Path(sys.argv[1])

    metrics = documented_metrics()
    check("docs/metrics.md lists the metrics", len(metrics) >= 30, len(metrics))
    dashboard = check_dashboard(directory, metrics)
    rules_file = check_rules(metrics)
    for render, enabled in (("minimal", False), ("demo", False), ("mtls", False), ("single-binary", False),
                            ("production", True), ("single-binary-metrics", True)):
        check_metrics(directory, render, enabled, dashboard, rules_file)
    for render in ("minimal", "demo", "mtls", "single-binary", "single-binary-metrics",
                   "production", "single-binary-otel"):
        check_otel(directory, render)

    for render, (mode, service_type) in KNOB_RENDERS.items():
        check_knobs(directory, render, mode, service_type)
    # So that "every object" means every kind the chart makes: the knobs
    # renders hold an object of every template.
    templates = {str(p.relative_to(CHART / "templates")) for p in (CHART / "templates").rglob("*.yaml")}
    rendered = {source for render in KNOB_RENDERS for source, _ in load_sourced(directory, render)}
    check("knobs renders: an object of every template", templates <= rendered, sorted(templates - rendered))
    for render in ("minimal", "production", "single-binary", "demo"):
        check_no_knobs(directory, render)
    minimal_secretless = [d for d in load(directory, "minimal") if d["kind"] == "Deployment"]
    check("minimal: no checksum/secret without a chart-made Secret",
          not [d["metadata"]["name"] for d in minimal_secretless if pod_annotation(d, "checksum/secret")])

    minimal = check_distributed(directory, "minimal")
    check("minimal: the chart makes no Secret (database.existingSecret)", not of_kind(minimal, "Secret"))
    check("minimal: anyone may reach the gateway",
          "ports" in of_kind(minimal, "NetworkPolicy")["ordermesh-gateway"]["spec"]["ingress"][0]
          and "from" not in of_kind(minimal, "NetworkPolicy")["ordermesh-gateway"]["spec"]["ingress"][0])
    check("minimal: a PodDisruptionBudget per target", len(of_kind(minimal, "PodDisruptionBudget")) == 4)
    accounts = of_kind(minimal, "ServiceAccount")
    check("minimal: ServiceAccount without token automount",
          [a.get("automountServiceAccountToken") for a in accounts.values()] == [False])
    test_pod = of_kind(minimal, "Pod").get("ordermesh-test-health", {})
    check("minimal: helm test pod", test_pod.get("metadata", {}).get("annotations", {}).get("helm.sh/hook") == "test")
    check("minimal: helm test checks the gateway",
          test_pod.get("spec", {}).get("containers", [{}])[0].get("args", [])[:2]
          == ["health", "http://ordermesh-gateway:8080"])

    production = check_distributed(directory, "production")
    hpas = of_kind(production, "HorizontalPodAutoscaler")
    check("production: an HPA per target", len(hpas) == 4, sorted(hpas))
    for name, deployment in of_kind(production, "Deployment").items():
        check(f"production/{name}: replicas left to the HPA", "replicas" not in deployment["spec"])
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        check(f"production/{name}: Linkerd injection", annotations.get("linkerd.io/inject") == "enabled")
    check("production: no Secret made by the chart", not of_kind(production, "Secret"))
    gateway_rules = of_kind(production, "NetworkPolicy")["ordermesh-gateway"]["spec"]["ingress"]
    check("production: gateway ingress narrowed to the listed peers", all(rule.get("from") for rule in gateway_rules))
    for kind in ("Ingress", "HTTPRoute", "ServiceMonitor"):
        check(f"production: {kind}", len(of_kind(production, kind)) == 1)

    demo = check_distributed(directory, "demo")
    secrets = of_kind(demo, "Secret")
    check("demo: the chart makes the database Secret for its PostgreSQL", list(secrets) == ["ordermesh-database"])
    check("demo: PostgreSQL and NATS run in the release",
          {"ordermesh-demo-postgresql", "ordermesh-demo-nats"} <= set(of_kind(demo, "Deployment")))
    for name in ("ordermesh-inventory", "ordermesh-payment"):
        env = env_of(of_kind(demo, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0])
        check(f"demo/{name}: seeds the demo data", env.get("ORDERMESH_SEED_DEMO", {}).get("value") == "true")

    mtls = load(directory, "mtls")
    certificates = of_kind(mtls, "Certificate")
    deployments = of_kind(mtls, "Deployment")
    for target in ("gateway", "order", "inventory", "payment"):
        name = f"ordermesh-{target}"
        certificate = certificates.get(f"ordermesh-tls-{target}", {}).get("spec", {})
        check(f"mtls: a Certificate naming {target}", certificate.get("dnsNames") == [f"{target}.ordermesh"], certificate)
        check(f"mtls: {target}'s Certificate is for server and client",
              sorted(certificate.get("usages", [])) == ["client auth", "server auth"], certificate)
        pod = deployments[name]["spec"]["template"]
        container = check_pod("mtls", name, pod, 8080 if target == "gateway" else 8086)
        env = env_of(container)
        check(f"mtls/{name}: certificate, key and CA from the mounted Secret",
              [env.get(k, {}).get("value") for k in ("ORDERMESH_TLS_CERT", "ORDERMESH_TLS_KEY", "ORDERMESH_TLS_CA")]
              == ["/etc/ordermesh/tls/tls.crt", "/etc/ordermesh/tls/tls.key", "/etc/ordermesh/tls/ca.crt"], env)
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        check(f"mtls/{name}: the Secret is its own",
              volumes.get("tls", {}).get("secret", {}).get("secretName") == f"ordermesh-tls-{target}", volumes.get("tls"))
        if target != "gateway":
            check(f"mtls/{name}: plaintext health for the probes",
                  env.get("ORDERMESH_HEALTH_LISTEN", {}).get("value") == "0.0.0.0:8086", env)

    single = load(directory, "single-binary")
    deployments = of_kind(single, "Deployment")
    check("single-binary: one Deployment", list(deployments) == ["ordermesh"], list(deployments))
    if "ordermesh" in deployments:
        container = check_pod("single-binary", "ordermesh", deployments["ordermesh"]["spec"]["template"], 8080)
        check("single-binary: runs `up`", container["args"] == ["up"])
        env = env_of(container)
        check("single-binary: listens on every interface", env["ORDERMESH_HOST"]["value"] == "0.0.0.0")
        for service in ("ORDER", "INVENTORY", "PAYMENT"):
            check(f"single-binary: {service} database URL from a Secret",
                  secret_ref(env, f"ORDERMESH_{service}_DATABASE_URL"))
    services = of_kind(single, "Service")
    check("single-binary: only the gateway Service", list(services) == ["ordermesh-gateway"], list(services))
    selector = services.get("ordermesh-gateway", {}).get("spec", {}).get("selector", {})
    check("single-binary: the gateway Service selects the one pod",
          selector.get("app.kubernetes.io/component") == "single-binary")

    if failures:
        print("\n".join(f"FAILED {f}" for f in failures), file=sys.stderr)
        print(f"helm_checks: {len(failures)} of {passed + len(failures)} checks failed", file=sys.stderr)
        return 1
    print(f"helm_checks: all {passed} checks hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
