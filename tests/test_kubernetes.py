"""A site on Kubernetes with the dask-kubernetes operator: the generated DaskCluster and
the site chart's operator mode, checked against the operator's CRD schemas and
Kubernetes' pod schema (no cluster here)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from federation.config import parse_site_config
from federation.kubernetes import open_secrets, operator_manifests, seal_secrets

operator = pytest.importorskip("dask_kubernetes.operator", reason="needs the 'kubernetes' extra")
kv = pytest.importorskip("kubernetes_validate", reason="needs the 'helm' extra")

from .test_helm import SITE, example, helm, merge, render, render_error  # noqa: E402

# the CRDs as the operator's Helm chart installs them (expanded, without $refs)
CRDS = Path(operator.__file__).parent / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
KUBE_VERSION = "1.30.0"

SITE_CONFIG = """
site: awi
cluster: {type: kubernetes, image: "registry.example.org/federation:0.1", cores: 4,
          memory: 8GiB, processes: 2}
adapt: {minimum: 0, maximum: 6}
datasets: {}
"""


def crd_validate(doc: dict) -> None:
    """Validate a custom resource against the operator's CRD (openAPIV3Schema)."""
    kind = doc["kind"].lower()
    crd = yaml.safe_load((CRDS / f"{kind}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    assert doc["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])


def pod_validate(spec: dict, name: str) -> None:
    """Validate an embedded pod spec as a Pod against Kubernetes' schema."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    kv.validate(pod, KUBE_VERSION, strict=True)


def cluster_parts(docs: list[dict]) -> tuple[dict, dict, dict | None]:
    (cluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    scalers = [d for d in docs if d["kind"] == "DaskAutoscaler"]
    return cluster, cluster["spec"], scalers[0] if scalers else None


def test_operator_spec_runs_the_site_and_its_workers():
    cfg = parse_site_config(SITE_CONFIG)
    docs = operator_manifests(cfg, "tcp://hub:8786")
    cluster, spec, scaler = cluster_parts(docs)
    for doc in docs:
        if doc["apiVersion"].startswith("kubernetes.dask.org/"):
            crd_validate(doc)
    pod_validate(spec["worker"]["spec"], "worker")
    pod_validate(spec["scheduler"]["spec"], "scheduler")
    (worker,) = spec["worker"]["spec"]["containers"]
    assert worker["args"] == [
        "dask", "federation", "site-worker", "/etc/federation/site.yaml", "tcp://hub:8786",
        "--nworkers", "2", "--nthreads", "2", "--memory-limit", str(4 * 1024**3),
        "--name", "$(DASK_WORKER_NAME)",
        "--secrets-from", "http://fed-awi-scheduler:8787/federation/v1/worker-secrets",
    ]
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "8192Mi"}
    (site,) = spec["scheduler"]["spec"]["containers"]
    assert site["args"][:6] == ["dask", "federation", "site", "/etc/federation/site.yaml",
                                "--hub", "tcp://hub:8786"]
    assert site["args"][6:] == ["--operator-api", "8787"]
    # the operator counts pods of 2 workers: adapt 0..6 workers is 0..3 pods
    assert scaler["spec"] == {"cluster": "fed-awi", "minimum": 0, "maximum": 3}
    assert spec["worker"]["replicas"] == 0
    # both pods mount the bootstrap token from the Secret the manifests include
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    kv.validate(secret, KUBE_VERSION, strict=True)
    token = {"name": "FEDERATION_SITE_BOOTSTRAP_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "fed-awi-bootstrap", "key": "bootstrap-token"}}}
    assert worker["env"] == [token] and site["env"] == [token]
    assert len(secret["stringData"]["bootstrap-token"]) >= 32


def test_worker_secrets_open_only_with_the_bootstrap_token():
    sealed = seal_secrets({"FEDERATION_CAPABILITY_KEY": "k" * 64}, "t" * 43)
    assert b"kkkk" not in sealed
    assert open_secrets(sealed, "t" * 43) == {"FEDERATION_CAPABILITY_KEY": "k" * 64}
    with pytest.raises(PermissionError, match="FEDERATION_SITE_BOOTSTRAP_TOKEN"):
        open_secrets(sealed, "u" * 43)
    with pytest.raises(PermissionError):
        open_secrets(sealed[:-4] + b"AAAA", "t" * 43)  # altered


def test_fixed_kubernetes_site_has_no_autoscaler():
    cfg = parse_site_config(SITE_CONFIG.replace("adapt: {minimum: 0, maximum: 6}",
                                                "workers: 4"))
    docs = operator_manifests(cfg, "tcp://hub:8786")
    _, spec, scaler = cluster_parts(docs)
    assert scaler is None and spec["worker"]["replicas"] == 2


OPERATOR_ON = {"operator": {"enabled": True, "minReplicas": 0, "maxReplicas": 3},
               "autoscaling": {"enabled": False}}


@pytest.mark.parametrize("tls, outbound", [(False, False), (True, False), (False, True)])
def test_site_chart_operator_mode(tls, outbound):
    values = merge(example("site-awi-values.yaml"), OPERATOR_ON)
    if outbound:  # worker pods learn the relay with the site's secrets
        values = merge(values, {"site": {"connectivity": "outbound-only"}})
    if tls:
        values = merge(values, {"tls": {"enabled": True, "secretName": "awi-tls"},
                                "site": {"hub": "tls://hub.example.org:8786"}})
    report = helm.lint(SITE, values, strict=True, kube_version="v1.30.0")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2]
    docs = render(SITE, values)
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap", "DaskAutoscaler", "DaskCluster", "Secret", "ServiceAccount"]
    cluster, spec, scaler = cluster_parts(docs)
    for doc in (cluster, scaler):
        crd_validate(doc)
    for part in ("worker", "scheduler"):
        pod_validate(spec[part]["spec"], part)
    for doc in docs:
        if doc["kind"] in ("ConfigMap", "Secret", "ServiceAccount"):
            kv.validate(doc, KUBE_VERSION, strict=True)
    assert scaler["spec"] == {"cluster": cluster["metadata"]["name"], "minimum": 0, "maximum": 3}

    # the site process reads the config the chart writes: kubernetes, adaptive 0..3 pods
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    cfg = parse_site_config(configmap["data"]["site.yaml"])
    workers = values["site"]["workers"]
    assert cfg.cluster.type == "kubernetes" and cfg.cluster.processes == workers
    assert (cfg.adapt.minimum, cfg.adapt.maximum) == (0, 3 * workers)
    (worker,) = spec["worker"]["spec"]["containers"]
    args = worker["args"]
    assert args[:5] == ["dask", "federation", "site-worker", "/etc/federation/site.yaml",
                        values["site"]["hub"]]
    assert args[args.index("--nworkers") + 1] == str(workers)
    assert ("--tls-cert" in args) == tls
    name = cluster["metadata"]["name"]
    assert args[args.index("--secrets-from") + 1] == (
        f"http://{name}-scheduler:8787/federation/v1/worker-secrets")
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert len(secret["data"]["bootstrap-token"]) > 40
    for container in (worker, spec["scheduler"]["spec"]["containers"][0]):
        assert {"name": "FEDERATION_SITE_BOOTSTRAP_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": f"{name}-bootstrap", "key": "bootstrap-token"}}} in container["env"]
    (site,) = spec["scheduler"]["spec"]["containers"]
    assert "--operator-api" in site["args"] and "--join" not in site["args"]
    # workers see the datasets, read-only, like the site process
    data = [m for m in worker["volumeMounts"] if m["mountPath"].startswith("/data/")]
    assert data and all(m["readOnly"] for m in data)


@pytest.mark.parametrize("override, message", [
    ({"autoscaling": {"enabled": True}}, "disable autoscaling"),
    ({"operator": {"minReplicas": 5, "maxReplicas": 2}}, "must not exceed"),
])
def test_site_chart_operator_mode_refusals(override, message):
    values = merge(merge(example("site-awi-values.yaml"), OPERATOR_ON), override)
    assert message in render_error(SITE, values)
