"""deploy/kubernetes/: valid against the Kubernetes schemas, and wired to keystile.

The core kinds (Deployment, Service, Secret, Ingress, ConfigMap) are validated
strictly with kubernetes-validate, offline. The custom resources (Envoy Gateway,
Istio, Gateway API) have no schema there: their fields were looked up in each
project's documentation and are checked below against keystile's own paths and
headers.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.deploy.k8s import (
    ENVOY_PREFIX,
    PASSED_ON,
    check_auth_ingress,
    check_keystile_pod,
    validate,
)
from tests.deploy.tools import DEPLOY, documents, module, yamllint

MANIFESTS = DEPLOY / "kubernetes"


def by_kind() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in documents(path):
            found[doc["kind"]] = doc
    return found


def test_yamllint_is_clean() -> None:
    yamllint(MANIFESTS)


def test_core_kinds_match_the_kubernetes_schemas() -> None:
    checked = {kind for kind, doc in by_kind().items() if validate(doc)}
    assert checked == {"Deployment", "Service", "Secret", "Ingress", "ConfigMap"}


def test_the_schema_check_can_fail() -> None:
    kv = module("kubernetes_validate")
    deployment = copy.deepcopy(by_kind()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kv.ValidationError):
        validate(deployment)


def test_the_deployment() -> None:
    kinds = by_kind()
    deployment, service = kinds["Deployment"], kinds["Service"]
    assert deployment["spec"]["replicas"] == 3
    check_keystile_pod(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    secret_keys = set(kinds["Secret"]["stringData"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    used = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert used == secret_keys


def test_ingress_nginx_asks_keystile_nginx_dialect() -> None:
    kinds = by_kind()
    service = kinds["Service"]
    fqdn = f"{service['metadata']['name']}.keystile.svc.cluster.local"
    check_auth_ingress(kinds["Ingress"], fqdn, service["spec"]["ports"][0]["port"])
    headers = kinds["ConfigMap"]["data"]
    assert headers == {"X-Original-URI": "$request_uri"}  # what /auth/nginx reads


def test_envoy_gateway_security_policy() -> None:
    kinds = by_kind()
    policy = kinds["SecurityPolicy"]
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    ext = policy["spec"]["extAuth"]
    assert ext["failOpen"] is False
    (backend,) = ext["http"]["backendRefs"]
    service = kinds["Service"]
    assert (backend["name"], backend["port"]) == (
        service["metadata"]["name"], service["spec"]["ports"][0]["port"])  # fmt: skip
    assert ext["http"]["path"] == ENVOY_PREFIX
    assert set(ext["http"]["headersToBackend"]) == PASSED_ON
    assert {"authorization", "x-api-key", "cookie"} <= set(ext["headersToExtAuth"])
    grant = kinds["ReferenceGrant"]  # the cross-namespace backendRef needs it
    assert grant["metadata"]["namespace"] == backend["namespace"]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": backend["name"]}]


def test_istio_custom_authorization() -> None:
    kinds = by_kind()
    policy = kinds["AuthorizationPolicy"]
    assert policy["spec"]["action"] == "CUSTOM"
    (provider,) = kinds["IstioOperator"]["spec"]["meshConfig"]["extensionProviders"]
    assert provider["name"] == policy["spec"]["provider"]["name"]
    http = provider["envoyExtAuthzHttp"]
    service = kinds["Service"]
    assert http["service"].startswith(service["metadata"]["name"] + ".")
    assert http["port"] == service["spec"]["ports"][0]["port"]
    assert http["pathPrefix"] == ENVOY_PREFIX
    assert http["failOpen"] is False
    upstream = set(http["headersToUpstreamOnAllow"])
    assert all(h in upstream or h.startswith("x-keystile-") for h in PASSED_ON)
