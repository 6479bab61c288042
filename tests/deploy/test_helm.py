"""deploy/helm/keystile: linted and rendered by Helm's own engine.

No helm binary comes from PyPI or Debian here; helm-python-sdk (PyPI) binds
Helm's Go SDK (v4) through a C library, so ``lint`` and ``render`` below are
Helm's, not an imitation. The rendered manifests are then validated like
deploy/kubernetes/ (strict Kubernetes schemas and keystile's wiring).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.k8s import KUBERNETES, check_auth_ingress, check_keystile_pod, validate
from tests.deploy.tools import DEPLOY, module, yamllint

CHART = DEPLOY / "helm" / "keystile"
EVERYTHING = {"authIngress": {"enabled": True}, "serviceMonitor": {"enabled": True}}


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    helm = module("helm_python")
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="ks", namespace="auth")
    docs = [doc for name, text in files.items() if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]  # fmt: skip
    return {doc["kind"]: doc for doc in docs}


def test_yamllint_is_clean_outside_the_templates() -> None:
    yamllint(CHART / "Chart.yaml", CHART / "values.yaml")


def test_helm_lint_finds_nothing_but_the_missing_icon() -> None:
    helm = module("helm_python")
    for values in ({}, EVERYTHING):
        found = helm.lint(str(CHART), values, strict=True, kube_version=KUBERNETES)
        assert found["errors"] == []
        assert [m["error"] for m in found["messages"]] == ["icon is recommended"]


def test_the_default_render_is_a_deployment_and_a_service() -> None:
    kinds = render({})
    assert set(kinds) == {"Deployment", "Service"}
    assert all(validate(doc) for doc in kinds.values())
    assert kinds["Deployment"]["spec"]["replicas"] == 3
    check_keystile_pod(kinds["Deployment"])


def test_the_optional_ingress_and_service_monitor() -> None:
    kinds = render(EVERYTHING)
    assert set(kinds) == {"Deployment", "Service", "ConfigMap", "Ingress", "ServiceMonitor"}
    assert {k for k, doc in kinds.items() if validate(doc)} == set(kinds) - {"ServiceMonitor"}
    check_auth_ingress(kinds["Ingress"], "ks-keystile.auth.svc.cluster.local", 8700)
    (endpoint,) = kinds["ServiceMonitor"]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    selector = kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= kinds["Service"]["metadata"]["labels"].items()


def test_values_reach_the_pod() -> None:
    kinds = render({"replicaCount": 5, "existingSecret": "mine", "workers": 2,
                    "extraEnv": {"KEYSTILE_KEY_PREFIX": "acme"}})  # fmt: skip
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert kinds["Deployment"]["spec"]["replicas"] == 5
    assert env["KEYSTILE_DB"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert env["KEYSTILE_WORKERS"]["value"] == "2"
    assert env["KEYSTILE_KEY_PREFIX"]["value"] == "acme"


def test_a_missing_secret_name_is_refused() -> None:
    helm = module("helm_python")
    with pytest.raises(helm.HelmError, match="existingSecret"):
        render({"existingSecret": ""})
