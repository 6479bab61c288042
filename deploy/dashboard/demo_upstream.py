"""A stand-in for the API behind the dashboard: it accepts only the upstream key
(which the proxy adds; the browser never has it) and says who is calling.

    DEMO_UPSTREAM_KEY=... python3 demo_upstream.py [PORT]
"""

from __future__ import annotations

import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = os.environ["DEMO_UPSTREAM_KEY"]


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        sent = self.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {KEY}".encode()):
            self._answer(401, {"error": "the upstream key is missing or wrong"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorized():
            return
        self._answer(200, {
            "caller": self.headers.get("X-Keystile-User"),
            "role": self.headers.get("X-Keystile-User-Role"),
            "requests_today": 42,
            "tokens_today": 12345,
            "upstream_key_ok": True,
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        })

    def do_POST(self) -> None:
        if not self._authorized():
            return
        length = int(self.headers.get("Content-Length") or 0)
        prompt = json.loads(self.rfile.read(length) or b"{}").get("prompt", "")
        self._answer(200, {"caller": self.headers.get("X-Keystile-User"),
                           "answer": f"You said: {prompt}"})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
