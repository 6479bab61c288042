"""deploy/dashboard/run.sh as a user runs it, on ports of the test's choosing: the
dashboard answers through real nginx (a browser without a session is sent to
sign in), the first run prints the demo password, --reset-password makes a new
one, and a taken port is named before anything is made."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import KEYSTILE, ROOT, free_port, unavailable, wait_for_port

pytestmark = pytest.mark.e2e
RUN = ROOT / "deploy" / "dashboard" / "run.sh"


def env_for(tmp_path: Path, ports: dict[str, int]) -> dict[str, str]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        unavailable("nginx is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update({name: str(port) for name, port in ports.items()})
    env.update({"DASHBOARD_RUN_DIR": str(tmp_path / "run"), "KEYSTILE": str(KEYSTILE),
                "XDG_DATA_HOME": str(tmp_path)})  # fmt: skip
    env["PATH"] = f"{env.get('PATH', '')}:/usr/sbin"
    return env


def test_the_example_runs_on_the_ports_it_is_given(tmp_path: Path) -> None:
    ports = {"DASHBOARD_PORT": free_port(), "KEYSTILE_PORT": free_port(),
             "UPSTREAM_PORT": free_port()}  # fmt: skip
    env = env_for(tmp_path, ports)
    out = tmp_path / "out.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(["bash", str(RUN)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        wait_for_port(ports["DASHBOARD_PORT"], proc=proc)
        wait_for_port(ports["KEYSTILE_PORT"], proc=proc)
        conn = http.client.HTTPConnection("127.0.0.1", ports["DASHBOARD_PORT"], timeout=10)
        try:
            conn.request("GET", "/", headers={"Accept": "text/html"})
            answer = conn.getresponse()
            answer.read()
        finally:
            conn.close()
        assert answer.status == 302, answer.status
        assert answer.getheader("Location", "").startswith("/_keystile/login")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    assert "Created user demo with password: " in out.read_text()
    again = subprocess.run(["bash", str(RUN), "--reset-password"], env=env, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "New password of user demo: " in again.stdout


def test_a_taken_port_is_named_and_nothing_is_made(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"DASHBOARD_PORT": taken, "KEYSTILE_PORT": free_port(),
                 "UPSTREAM_PORT": free_port()}  # fmt: skip
        done = subprocess.run(["bash", str(RUN)], env=env_for(tmp_path, ports),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert f"127.0.0.1:{taken} is in use; pick another: DASHBOARD_PORT=PORT" in done.stderr
    assert not (tmp_path / "run" / "keystile.db").exists()
