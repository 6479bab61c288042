"""What the Kubernetes manifests and the Helm chart must both get right."""

from __future__ import annotations

from typing import Any

from keystile.core.decide import IDENTITY_HEADERS
from keystile.serve.adapters import envoy_http, nginx
from tests.deploy.tools import module

# The schemas kubernetes-validate ships go back to 1.25; this is the oldest
# Kubernetes release the manifests promise to work on.
KUBERNETES = "1.31.0"
SECRET_ENV = {"KEYSTILE_DB", "KEYSTILE_REDIS_URL", "KEYSTILE_PEPPER", "KEYSTILE_ADMIN_KEY"}
NGINX_PATH = nginx.ADAPTER.path  # /auth/nginx
ENVOY_PREFIX = envoy_http.PREFIX  # /auth/envoy
PASSED_ON = {name.lower() for name in IDENTITY_HEADERS} | {"authorization", "x-api-key"}


def validate(doc: dict[str, Any]) -> bool:
    """Validate against the Kubernetes OpenAPI schemas, strictly (an unknown field
    fails). False: a custom resource, for which no schema is shipped."""
    kv = module("kubernetes_validate")
    try:
        kv.validate(doc, KUBERNETES, strict=True)
    except kv.SchemaNotFoundError:
        return False
    return True


def check_keystile_pod(deployment: dict[str, Any]) -> None:
    """Probes, secrets, non-root, read-only root: what keystile.yaml promises."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    env = {e["name"]: e for e in container["env"]}
    assert env["KEYSTILE_LISTEN"]["value"] == "0.0.0.0:8700"
    assert "KEYSTILE_TRUSTED_PROXIES" in env  # else every request from the ingress is denied
    from_secret = {n for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    assert from_secret == SECRET_ENV
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the read-only root leaves keystile nowhere else to write


def check_auth_ingress(ingress: dict[str, Any], service: str, port: int) -> None:
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "auth-url"].endswith(f"{service}:{port}{NGINX_PATH}")
    passed = {h.strip().lower() for h in annotations[prefix + "auth-response-headers"].split(",")}
    assert passed == PASSED_ON
    assert prefix + "auth-proxy-set-headers" in annotations  # X-Original-URI
