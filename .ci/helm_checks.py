"""Structural checks of the rendered Helm chart (target/helm/*.yaml), beyond
what the Kubernetes schemas say: the promises the chart makes in its README.

Usage: python .ci/helm_checks.py RENDER_DIR
Renders expected: minimal, production, demo, mtls (Distributed) and single-binary.
"""

import sys
from pathlib import Path

import yaml

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
    return docs


def main():
    directory = Path(sys.argv[1])

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
