"""The Helm charts in deploy/helm: lint, render, validate against Kubernetes' schemas.

Needs the optional extra ``helm`` (helm-python-sdk, which embeds Helm's Go library, and
kubernetes-validate); skipped without them. No cluster, no ``helm`` binary.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="needs the 'helm' extra (helm-python-sdk)")
kv = pytest.importorskip("kubernetes_validate", reason="needs the 'helm' extra")
from kubernetes_validate import utils as kv_utils  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "deploy" / "helm"
EXAMPLES = ROOT / "deploy" / "examples"
HUB, SITE = CHARTS / "hub", CHARTS / "site"
# Kubernetes 1.30 (or the oldest schema kubernetes-validate still ships, if newer) and the
# newest it ships.
_SHIPPED = kv_utils.all_versions()
KUBE_VERSIONS = sorted({"1.30.0" if "1.30.0" in _SHIPPED else _SHIPPED[0], _SHIPPED[-1]})
RELEASE, NAMESPACE = "test", "federation"
MiB = 1024**2

CASES = {
    "hub-defaults": (HUB, None),
    "hub-example": (HUB, "hub-values.yaml"),
    "site-defaults": (SITE, None),
    "site-awi": (SITE, "site-awi-values.yaml"),
    "site-geomar": (SITE, "site-geomar-values.yaml"),
}

# Every optional feature switched on at once, so their manifests get validated too.
HUB_ALL_ON = {
    "hub": {
        "config": {"timeouts": {"connect": "30s"}},
        "tokensSecret": "hub-tokens",
        "dashboardPrefix": "/dask",
    },
    "tls": {"enabled": True, "secretName": "hub-tls"},
    "service": {
        "type": "LoadBalancer",
        "nodePort": 30786,
        "loadBalancerSourceRanges": ["192.0.2.0/24"],
    },
    "dashboard": {
        "ingress": {
            "enabled": True,
            "host": "dash.example.org",
            "path": "/dask",
            "tls": [{"secretName": "x", "hosts": ["dash.example.org"]}],
        }
    },
}
SITE_ALL_ON = {
    "site": {
        "name": "awi",
        "hub": "tls://hub.example.org:8786",
        "workers": 3,
        "memoryLimit": "2GiB",
        "memoryOverhead": "512MiB",
        "extraArgs": ["--verbose"],
    },
    "tls": {"enabled": True, "secretName": "site-tls"},
    "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 70},
    "scratch": {"sizeLimit": "10Gi", "medium": "Memory"},
    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
    "datasets": {
        "sst": {
            "mount": {"claimName": "ocean"},
            "path": "sst.zarr",
            "engine": "zarr",
            "description": "SST",
            "egress": "aggregated",
            "maxEgressBytes": "50MB",
        },
        "ice": {"mount": {"hostPath": "/srv/ice"}, "egress": "none"},
    },
}


# --- helpers


def example(name: str | None) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text()) if name else {}


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(chart: Path, values: dict | None = None) -> list[dict]:
    """All Kubernetes objects the chart renders (NOTES.txt left out)."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def render_error(chart: Path, values: dict) -> str:
    with helm.Chart.load(chart) as loaded, pytest.raises(helm.HelmError) as info:
        loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(info.value)


def find(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = find(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict], kind: str) -> dict:
    (c,) = one(docs, kind)["spec"]["template"]["spec"]["containers"]
    return c


def site_yaml(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["site.yaml"])


def mount_paths(c: dict) -> set[str]:
    return {m["mountPath"] for m in c.get("volumeMounts", [])}


def quantity_bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", q)
    assert m, f"unexpected quantity {q!r}"
    return int(m[1]) * {"Ki": 1024, "Mi": MiB, "Gi": 1024**3}[m[2]]


def site_argv(c: dict) -> list[str]:
    """The `dask federation site ...` argv of the container (run by the image's tini)."""
    assert "command" not in c  # the image's ENTRYPOINT (tini) stays PID 1
    return c["args"]


# --- lint, render, validate


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict(case):
    chart, values_file = CASES[case]
    report = helm.lint(chart, example(values_file), strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not problems and not report["errors"], report


@pytest.mark.parametrize(
    "chart, values",
    [*CASES.values(), (HUB, HUB_ALL_ON), (SITE, SITE_ALL_ON)],
    ids=[*CASES, "hub-all-features", "site-all-features"],
)
def test_manifests_valid_for_kubernetes(chart, values):
    docs = render(chart, values if isinstance(values, dict) else example(values))
    assert docs
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        for version in KUBE_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:  # pragma: no cover - the message is the point
                where = ".".join(str(p) for p in e.path)
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}) {where}: {e.message}"
                )
        # kubernetes-validate accepts `emptyDir: null`; Kubernetes does not.
        for vol in doc.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            assert len(vol) == 2 and None not in vol.values(), vol


def test_default_kinds():
    assert sorted(d["kind"] for d in render(HUB)) == [
        "ConfigMap",
        "Deployment",
        "Service",
        "Service",
        "ServiceAccount",
    ]
    assert sorted(d["kind"] for d in render(SITE)) == [
        "ConfigMap",
        "Deployment",
        "ServiceAccount",
    ]


# --- site chart


@pytest.mark.parametrize("values_file", ["site-awi-values.yaml", "site-geomar-values.yaml"])
def test_site_configmap_lists_the_datasets(values_file):
    values = example(values_file)
    cfg = site_yaml(render(SITE, values))
    assert cfg["site"] == values["site"]["name"]
    assert cfg["hub"] == values["site"]["hub"]
    assert cfg["workers"] == values["site"]["workers"]
    assert cfg["nthreads"] == values["site"]["nthreads"]
    assert cfg["memory_limit"] == values["site"]["memoryLimit"]
    assert set(cfg["datasets"]) == set(values["datasets"])
    for name, ds in values["datasets"].items():
        got = cfg["datasets"][name]
        assert got["path"] == f"/data/{name}/{ds['path']}"
        assert got["description"] == ds["description"]
        assert got.get("engine") == ds.get("engine")
        assert got.get("egress") == ds.get("egress")
        assert got.get("max_egress_bytes") == ds.get("maxEgressBytes")


def test_site_dataset_volumes_read_only_and_shared():
    values = example("site-awi-values.yaml")  # two datasets on one claim
    docs = render(SITE, values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs, "Deployment")
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert len(claims) == 1
    assert claims[0]["persistentVolumeClaim"] == {"claimName": "awi-ocean-data", "readOnly": True}
    data_mounts = [m for m in c["volumeMounts"] if m["mountPath"].startswith("/data/")]
    assert sorted(m["mountPath"] for m in data_mounts) == ["/data/salinity", "/data/sst"]
    assert all(m["readOnly"] and m["name"] == claims[0]["name"] for m in data_mounts)

    docs = render(SITE, example("site-geomar-values.yaml"))  # hostPath
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    hosts = sorted(v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v)
    assert hosts == ["/srv/archive/argo", "/srv/archive/bathymetry"]
    assert all(
        m["readOnly"]
        for m in container(docs, "Deployment")["volumeMounts"]
        if m["mountPath"].startswith("/data/")
    )


def test_site_yaml_accepted_by_the_site_config_model():
    config = pytest.importorskip("federation.config")
    for values_file in ("site-awi-values.yaml", "site-geomar-values.yaml", None):
        cfg = site_yaml(render(SITE, example(values_file)))
        parsed = config.parse_site_config(yaml.safe_dump(cfg), source=str(values_file))
        assert parsed.site == (cfg["site"])


@pytest.mark.parametrize("values_file", ["site-awi-values.yaml", "site-geomar-values.yaml", None])
def test_site_command_runs_dask_federation_site_against_the_hub(values_file):
    values = example(values_file)
    hub = values.get("site", {}).get("hub", "tcp://dask-federation-hub:8786")
    argv = site_argv(container(render(SITE, values), "Deployment"))
    assert argv[:6] == ["dask", "federation", "site", "/etc/federation/site.yaml", "--hub", hub]
    # Every pod is a site process that may start before or after the others: all --join.
    assert argv[-1] == "--join"


@pytest.mark.parametrize(
    "chart, kind, values_file",
    [
        (HUB, "Deployment", None),
        (HUB, "Deployment", "hub-values.yaml"),
        (SITE, "Deployment", None),
        (SITE, "Deployment", "site-awi-values.yaml"),
        (SITE, "Deployment", "site-geomar-values.yaml"),
    ],
)
def test_the_cli_accepts_the_rendered_arguments(chart, kind, values_file):
    cli = pytest.importorskip("federation.cli")
    argv = container(render(chart, example(values_file)), kind)["args"]
    assert argv[:2] == ["dask", "federation"]
    command = cli.main.commands[argv[2]]
    with command.make_context(argv[2], argv[3:], resilient_parsing=False) as ctx:
        assert ctx.params


def test_outbound_only_site_listens_on_the_pod_ip():
    docs = render(SITE, {"site": {"connectivity": "outbound-only"}})
    c = container(docs, "Deployment")
    assert c["args"][c["args"].index("--listen-host") + 1] == "$(POD_IP)"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert site_yaml(docs)["connectivity"] == "outbound-only"
    plain = container(render(SITE), "Deployment")
    assert "--listen-host" not in plain["args"] and "connectivity" not in site_yaml(render(SITE))


def test_site_without_join_only_as_a_single_pod():
    argv = site_argv(container(render(SITE, {"site": {"join": False}}), "Deployment"))
    assert "--join" not in argv
    for values in ({"replicas": 2}, {"autoscaling": {"enabled": True}}):
        assert "site.join" in render_error(SITE, merge({"site": {"join": False}}, values))


def test_site_upgrades_recreate_pods_by_default():
    spec = one(render(SITE), "Deployment")["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    spec = one(render(SITE, {"updateStrategy": "RollingUpdate"}), "Deployment")["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate"}


@pytest.mark.parametrize("values_file", ["site-awi-values.yaml", "site-geomar-values.yaml", None])
def test_site_memory_limit_is_workers_times_memory_limit_plus_overhead(values_file):
    from dask.utils import parse_bytes

    docs = render(SITE, example(values_file))
    values = merge(yaml.safe_load((SITE / "values.yaml").read_text()), example(values_file))
    site = values["site"]
    expected = site["workers"] * parse_bytes(site["memoryLimit"]) + parse_bytes(
        site["memoryOverhead"]
    )
    resources = container(docs, "Deployment")["resources"]
    limit = quantity_bytes(resources["limits"]["memory"])
    assert expected <= limit < expected + MiB
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert site_yaml(docs)["memory_limit"] == site["memoryLimit"]


def test_site_resources_keep_user_requests():
    docs = render(
        SITE, {"resources": {"requests": {"cpu": "3", "memory": "2Gi"}, "limits": {"cpu": "4"}}}
    )
    resources = container(docs, "Deployment")["resources"]
    assert resources["requests"] == {"cpu": "3", "memory": "2Gi"}
    assert resources["limits"] == {"cpu": "4", "memory": "5120Mi"}  # 1 x 4GiB + 1GiB


def test_site_tls_only_when_enabled():
    plain = container(render(SITE), "Deployment")
    assert "/etc/federation/tls" not in mount_paths(plain)
    assert not any(a.startswith("--tls") for a in plain["args"])

    docs = render(SITE, SITE_ALL_ON)
    c = container(docs, "Deployment")
    assert "/etc/federation/tls" in mount_paths(c)
    argv = site_argv(c)
    assert argv[4:6] == ["--hub", "tls://hub.example.org:8786"]
    assert argv[-2:] == ["--verbose", "--join"]
    for flag, file in [
        ("--tls-ca-file", "ca.pem"),
        ("--tls-cert", "cert.pem"),
        ("--tls-key", "key.pem"),
    ]:
        assert argv[argv.index(flag) + 1] == f"/etc/federation/tls/{file}"
    (tls,) = [
        v
        for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "tls"
    ]
    assert tls["secret"]["secretName"] == "site-tls"


def test_site_hpa_only_when_enabled():
    docs = render(SITE, {"replicas": 3})
    assert not find(docs, "HorizontalPodAutoscaler")
    assert one(docs, "Deployment")["spec"]["replicas"] == 3

    docs = render(SITE, example("site-awi-values.yaml"))
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 75


def test_site_name_defaults_to_release_name():
    assert site_yaml(render(SITE))["site"] == RELEASE


# --- hub chart


@pytest.mark.parametrize("values", [{}, HUB_ALL_ON], ids=["defaults", "all-features"])
def test_hub_probes_check_health_on_the_dashboard_port(values):
    docs = render(HUB, values)
    c = container(docs, "Deployment")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"scheduler": 8786, "dashboard": 8787, "relay": 8789}
    assert c["args"][c["args"].index("--relay-port") + 1] == "8789"
    prefix = values.get("hub", {}).get("dashboardPrefix", "")
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == f"{prefix}/health"
        assert get["port"] in ("dashboard", 8787)
    assert c["args"][:3] == ["dask", "federation", "hub"]
    args = c["args"]
    assert args[args.index("--port") + 1] == "8786"
    assert args[args.index("--dashboard-address") + 1] == ":8787"
    assert one(docs, "Deployment")["spec"]["replicas"] == 1


def test_hub_services():
    services = {s["metadata"]["name"]: s for s in find(render(HUB, HUB_ALL_ON), "Service")}
    sched = services[f"{RELEASE}-dask-federation-hub"]["spec"]
    assert sched["type"] == "LoadBalancer"
    assert sched["ports"] == [
        {
            "name": "scheduler",
            "port": 8786,
            "targetPort": "scheduler",
            "protocol": "TCP",
            "nodePort": 30786,
        },
        # outbound-only sites reach the relay wherever they reach the scheduler
        {"name": "relay", "port": 8789, "targetPort": "relay", "protocol": "TCP"},
    ]
    dash = services[f"{RELEASE}-dask-federation-hub-dashboard"]["spec"]
    assert dash["ports"][0]["targetPort"] == "dashboard"


def test_hub_tls_and_tokens_only_when_enabled():
    plain = render(HUB)
    c = container(plain, "Deployment")
    assert not {"/etc/federation/tls", "/etc/federation/tokens"} & mount_paths(c)
    assert "--config" not in c["args"] and not any(a.startswith("--tls") for a in c["args"])
    assert yaml.safe_load(one(plain, "ConfigMap")["data"]["hub.yaml"]) == {}

    docs = render(HUB, HUB_ALL_ON)
    c = container(docs, "Deployment")
    assert {"/etc/federation/tls", "/etc/federation/tokens"} <= mount_paths(c)
    args = c["args"]
    assert args[args.index("--config") + 1] == "/etc/federation/hub.yaml"
    assert args[args.index("--tls-cert") + 1] == "/etc/federation/tls/cert.pem"
    hub_yaml = yaml.safe_load(one(docs, "ConfigMap")["data"]["hub.yaml"])
    assert hub_yaml == {
        "timeouts": {"connect": "30s"},
        "tokens_file": "/etc/federation/tokens/tokens.yaml",
    }
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert secrets == {"tokens": "hub-tokens", "tls": "hub-tls"}


def test_hub_ingress_only_when_enabled():
    assert not find(render(HUB), "Ingress")
    ingress = one(render(HUB, example("hub-values.yaml")), "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "dashboard.federation.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "federation-hub-dashboard", "port": {"name": "dashboard"}}


# --- both charts


@pytest.mark.parametrize("chart, kind", [(HUB, "Deployment"), (SITE, "Deployment")])
def test_locked_down_security_context(chart, kind):
    docs = render(chart)
    pod = one(docs, kind)["spec"]["template"]["spec"]
    c = container(docs, kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert "emptyDir" in tmp and "/tmp" in mount_paths(c)


@pytest.mark.parametrize(
    "chart, values, field",
    [
        (SITE, {"replicas": "two"}, "/replicas"),
        (SITE, {"datasets": {"sst": {"path": "sst.zarr"}}}, "/datasets/sst"),
        (SITE, {"datasets": {"sst": {"mount": {}}}}, "/datasets/sst/mount"),
        (
            SITE,
            {"datasets": {"sst": {"mount": {"claimName": "a", "hostPath": "/b"}}}},
            "/datasets/sst/mount",
        ),
        (SITE, {"datasets": {"sst": {"mount": {"pvc": "a"}}}}, "/datasets/sst/mount"),
        (
            SITE,
            {"datasets": {"sst": {"mount": {"claimName": "a"}, "egress": "some"}}},
            "/datasets/sst/egress",
        ),
        (SITE, {"site": {"memoryLimit": "4G"}}, "/site/memoryLimit"),
        (SITE, {"site": {"workers": 0}}, "/site/workers"),
        (SITE, {"site": {"hub": "hub:8786"}}, "/site/hub"),
        (SITE, {"tls": {"enabled": True, "secretName": "s"}}, "/site/hub"),
        (SITE, {"tls": {"enabled": True}, "site": {"hub": "tls://h:8786"}}, "/tls/secretName"),
        (SITE, {"replica": 2}, "replica"),
        (HUB, {"hub": {"config": {"tokens": ["secret"]}}}, "/hub/config/tokens"),
        (HUB, {"service": {"type": "External"}}, "/service/type"),
        (HUB, {"hub": {"port": "8786"}}, "/hub/port"),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(chart, values, field):
    with helm.Chart.load(chart) as loaded, pytest.raises(helm.HelmValuesError) as info:
        loaded.validate_schema(values)
    assert field in str(info.value)
    assert field in render_error(chart, values)  # install/template validate the same way


def test_lint_reports_bad_values():
    report = helm.lint(SITE, {"replicas": "two"}, strict=True)
    assert any("/replicas" in e for e in report["errors"])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"resources": {"limits": {"memory": "8Gi"}}}, "resources.limits.memory"),
        (
            {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}},
            "resources.requests.cpu",
        ),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
    ],
)
def test_site_template_checks(values, message):
    assert message in render_error(SITE, values)


# --- documentation


def _leaf_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths += _leaf_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


@pytest.mark.parametrize("chart", [HUB, SITE], ids=["hub", "site"])
def test_readme_documents_every_value(chart):
    values = yaml.safe_load((chart / "values.yaml").read_text())
    readme = (chart / "README.md").read_text()
    documented = re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M)
    assert len(documented) == len(set(documented)), "a value is documented twice"
    for path in _leaf_paths(values):
        assert any(path == d or path.startswith(d + ".") for d in documented), (
            f"{chart.name}/README.md has no row for {path}"
        )
    leaves = _leaf_paths(values)
    for d in documented:
        if "<" in d:
            continue
        assert any(p == d or p.startswith(d + ".") for p in leaves), f"stale README row {d}"
    schema_keys = set(yaml.safe_load((chart / "values.schema.json").read_text())["properties"])
    assert schema_keys == set(values), "values.schema.json and values.yaml disagree"


def test_dockerfile_conventions():
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, flags=re.M)
    assert re.search(r"pip install \"/tmp/src\[netcdf\]\"", text)
    assert re.search(r"^USER 1000(:1000)?$", text, flags=re.M)
    assert not re.search(r"(?i)(password|token|secret)\s*=", text)
