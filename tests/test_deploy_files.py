"""The deployment files are valid: docker-compose checks the compose file offline (no engine needed), the
Kubernetes manifests validate against the API schemas (kubernetes-validate, strict), the Dockerfile's stages
keep torch out of the runtime image, and the configs they ship load as GridWatch settings."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gridwatch.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"
K8S = REPO / "docker" / "k8s"
K8S_VERSION = "1.30.0"


def _compose_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")} | (env or {})
    return subprocess.run(
        ["docker-compose", "-f", str(path), "config"], capture_output=True, text=True, timeout=60, env=environ
    )


def test_compose_file_is_valid_with_the_split_deployment() -> None:
    result = _compose_config(COMPOSE, {"GRIDWATCH_SECRET_KEY": "k"})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"redis", "s3", "postgres", "mqtt", "api", "dispatcher", "worker"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["command"][0] == "worker" and services["api"]["command"][0] == "api"
    assert services["dispatcher"]["command"][0] == "dispatcher"
    assert str(services["api"]["ports"][0]).startswith("127.0.0.1:")  # the TLS proxy is in front
    for name in ("api", "dispatcher", "worker"):
        assert services[name]["environment"]["GRIDWATCH_SECRET_KEY"] == "k"


def test_compose_refuses_to_start_without_the_secret_key() -> None:
    result = _compose_config(COMPOSE)
    assert result.returncode != 0 and "GRIDWATCH_SECRET_KEY" in result.stderr


def test_the_check_catches_a_broken_compose_file(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["worker"]["restart_policy_typo"] = "always"
    broken = tmp_path / "docker"
    broken.mkdir()
    (broken / "compose.yaml").write_text(yaml.safe_dump(compose))
    result = _compose_config(broken / "compose.yaml", {"GRIDWATCH_SECRET_KEY": "k"})
    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


def test_dockerfile_exports_models_apart_and_runs_as_non_root() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    stages = re.split(r"\n(?=FROM )", text)
    assert len(stages) == 5, "a preamble and four stages"  # source, models, venv, runtime
    source, models, venv, runtime = stages[1:]
    assert "AS source" in source and "COPY gridwatch gridwatch" in source
    assert "AS models" in models and "gridwatch models prepare" in models and ".[export]" in models
    assert "install --no-cache-dir ." in venv and '! /app/.venv/bin/python -c "import torch"' in venv
    assert "COPY --from=venv /app/.venv" in runtime and "COPY --from=models /models" in runtime
    assert "export" not in runtime and "torch" not in runtime.replace("# ", "")
    assert "\nUSER gridwatch" in runtime and "tini" in runtime


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    """The resources of docker/k8s (the Kustomization itself left out)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [
            (path.name, d) for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "Kustomization"
        ]
    return docs


def test_kubernetes_manifests_validate_strictly() -> None:
    kinds = set()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name, doc in _manifests():
        assert name in kustomization["resources"], name
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        kinds.add((doc["kind"], doc["metadata"]["name"]))
    assert {
        ("Deployment", "gridwatch-api"),
        ("Deployment", "gridwatch-dispatcher"),
        ("Deployment", "gridwatch-worker"),
        ("HorizontalPodAutoscaler", "gridwatch-worker"),
    } <= kinds


def test_the_validation_catches_a_broken_manifest() -> None:
    worker = next(
        doc for _, doc in _manifests() if doc["kind"] == "Deployment" and "worker" in doc["metadata"]["name"]
    )
    broken = copy.deepcopy(worker)
    broken["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_workers_scale_on_lag_and_stop_gracefully() -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _manifests()}
    hpa = docs[("HorizontalPodAutoscaler", "gridwatch-worker")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gridwatch-worker",
    }
    metrics = {m["pods"]["metric"]["name"] for m in hpa["metrics"]}
    assert metrics == {"gridwatch_cluster_demand_ratio", "gridwatch_detector_latency_p95_seconds"}
    pod = docs[("Deployment", "gridwatch-worker")]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["args"][0] == "worker"


def test_the_shipped_configs_load_as_settings(tmp_path: Path) -> None:
    """The ConfigMap's site.yaml with the Secret's variables, as a pod reads them."""
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _manifests()}
    secret = docs[("Secret", "gridwatch-secrets")]["stringData"]
    site = tmp_path / "site.yaml"
    site.write_text(docs[("ConfigMap", "gridwatch-config")]["data"]["site.yaml"])
    settings = load_settings(site, environ=dict(secret))
    assert settings.redis.url is not None and settings.database.url is not None
    assert settings.api.host == "0.0.0.0" and settings.secret_key is not None


def test_the_adapter_serves_every_metric_the_autoscaler_asks_for() -> None:
    """Each HPA metric is the `as` name of one prometheus-adapter rule, whose series a worker exports
    (checked against a real worker in tests/test_worker_capacity.py) with the pod and namespace."""
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rules = values["rules"]["custom"]
    assert values["rules"]["default"] is False
    served = {rule["name"]["as"]: rule for rule in rules}
    hpa = next(d for _, d in _manifests() if d["kind"] == "HorizontalPodAutoscaler")
    for metric in hpa["spec"]["metrics"]:
        name = metric["pods"]["metric"]["name"]
        assert name in served, name
        rule = served[name]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
        series = rule["seriesQuery"].split("{", 1)[0]
        assert re.fullmatch(rule["name"]["matches"], series), (rule["name"], series)
    assert {r["seriesQuery"].split("{", 1)[0] for r in rules} == set(ADAPTER_SERIES)


ADAPTER_SERIES = ("gridwatch_cluster_demand_ratio", "gridwatch_detector_latency_quantile_seconds")
