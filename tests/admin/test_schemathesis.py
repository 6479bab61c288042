"""schemathesis against the OpenAPI document a real `keystile serve` serves:
no server errors, every response matching its documented status, type and schema,
invalid data refused and valid data accepted.

What JSON Schema cannot say (an address in a string, a date in the future, an
opaque cursor) is a named format in the document; schemathesis_hooks.py tells
schemathesis how to make valid values of each."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import Keystile

ADMIN = "schemathesis-admin-key-0123456789"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance,negative_data_rejection,"
          "unsupported_method,missing_required_header,use_after_free,"
          "ensure_resource_availability,ignored_auth,positive_data_acceptance")  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def test_admin_api_against_its_openapi_document(tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("schemathesis")
    if not binary.exists() and not shutil.which("schemathesis"):
        if os.environ.get("KEYSTILE_E2E_REQUIRED") == "1":
            pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    (tmp_path / "keystile.toml").write_text('[[routes]]\nname = "chat"\npath = "/v1/chat/*"\n'
                                            'scopes = ["chat"]\n')  # fmt: skip
    keystile = Keystile(tmp_path, {"KEYSTILE_DB": str(tmp_path / "k.db"),
                                   "KEYSTILE_CONFIG": str(tmp_path / "keystile.toml"),
                                   "KEYSTILE_ADMIN_KEY": ADMIN}).start()  # fmt: skip
    try:
        done = subprocess.run(
            [str(binary), "run", f"http://127.0.0.1:{keystile.port}/api/v1/openapi.json",
             "-H", f"Authorization: Bearer {ADMIN}", "--checks", CHECKS,
             "--max-examples", "25", "--seed", "20261123", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.admin.schemathesis_hooks",
                 "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        keystile.stop()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Traceback" not in keystile.log()
