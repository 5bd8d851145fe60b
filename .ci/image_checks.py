# The image definition's promises (.ci/helm.sh runs it): the binary is stripped,
# the runtime stage carries the OCI labels, and its version is the
# workspace's and the chart's appVersion.
import re, sys, tomllib
docker = open("Dockerfile").read()
problems = []
if not re.search(r"install -s\b[^\n]*/out/ordermesh", docker):
    problems.append("the binary is copied unstripped (install -s)")
runtime = docker[docker.rindex("\nFROM "):]
for label in ("title", "description", "version", "licenses"):
    if f"org.opencontainers.image.{label}=" not in runtime:
        problems.append(f"the runtime stage has no org.opencontainers.image.{label} label")
workspace = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]
version = re.search(r"^ARG VERSION=(\S+)$", runtime, re.M)
chart = re.search(r'^appVersion: "?([^"\n]+)"?$', open("helm/ordermesh/Chart.yaml").read(), re.M).group(1)
if not version or version.group(1) != workspace["version"] or chart != workspace["version"]:
    problems.append(
        f"versions differ: image {version and version.group(1)}, workspace {workspace['version']}, chart appVersion {chart}"
    )
if f'org.opencontainers.image.licenses="{workspace["license"]}"' not in runtime:
    problems.append(f"the licenses label is not the workspace's {workspace['license']}")
for problem in problems:
    print("Dockerfile:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
