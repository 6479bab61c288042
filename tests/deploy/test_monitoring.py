"""deploy/prometheus/alerts.yml and deploy/grafana/keystile.json against the
metrics a real keystile exports.

promtool (Debian's prometheus package) checks the rules and runs their unit
tests (alerts.test.yml), and checks every dashboard query as PromQL; each
metric name in either must appear in the /metrics of a running keystile.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from keystile.core.reasons import Outcome
from tests.deploy.tools import DEPLOY, binary, run, yamllint
from tests.e2e.harness import Keystile, request

RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "keystile.json"
METRIC = re.compile(r"\bkeystile_[a-z_]+")


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Sample names in the /metrics of a keystile that answered an allow and a deny."""
    workdir: Path = tmp_path_factory.mktemp("monitoring")
    keystile = Keystile(workdir, {"KEYSTILE_DB": str(workdir / "k.db")})
    key = orjson.loads(keystile.cli("keys", "create", "--name", "m", "--json").stdout)["key"]
    keystile.start()
    try:
        statuses = [
            request(
                keystile.port,
                "GET",
                "/auth/nginx",
                [("X-Original-URI", "/v1/x"), ("X-Api-Key", sent)],
            ).status
            for sent in (key, "ks_wrong")
        ]
        assert statuses == [200, 401]
        text = request(keystile.port, "GET", "/metrics").body.decode()
    finally:
        keystile.stop()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    promtool = binary("promtool")
    run(promtool, "check", "rules", str(RULES))
    run(promtool, "test", "rules", "alerts.test.yml", cwd=RULES.parent)


def test_yamllint_is_clean() -> None:
    yamllint(RULES, RULES.parent / "alerts.test.yml")


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query as a recording rule, Grafana's variables filled in, through promtool."""
    exprs = [e.replace("$__rate_interval", "5m").replace("$job", ".*") for e in dashboard_exprs()]
    rules = [{"record": f"keystile:dashboard:{n}", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(binary("promtool"), "check", "rules", str(path))


def test_the_dashboard_covers_what_was_asked() -> None:
    joined = "\n".join(dashboard_exprs())
    assert "sum by (outcome) (rate(keystile_decisions_total" in joined
    assert "sum by (reason, detail)" in joined
    assert "histogram_quantile(0.99, sum by (le) (rate(keystile_decision_seconds_bucket" in joined
    assert "keystile_cache_lookups_total" in joined  # the hit ratio
    assert 'outcome="unavailable"' in joined  # store errors


def test_every_metric_used_exists_in_a_real_scrape(scraped: set[str]) -> None:
    used = {name for expr in rule_exprs() + dashboard_exprs() for name in METRIC.findall(expr)}
    used = {name for name in used if not name.startswith("keystile_dashboard")}
    assert len(used) >= 6
    assert used <= scraped, sorted(used - scraped)


def test_every_outcome_named_is_one_keystile_counts() -> None:
    outcomes = {o.name.lower() for o in Outcome}
    named = set()
    for expr in rule_exprs() + dashboard_exprs():
        named |= set(re.findall(r'outcome!?="([a-z_]+)"', expr))
    assert named and named <= outcomes
