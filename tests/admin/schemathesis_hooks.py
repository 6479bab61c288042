"""How schemathesis makes values for the admin API's named formats (keystile.fields
.FORMATS): loaded through SCHEMATHESIS_HOOKS by tests/admin/test_schemathesis.py, so
that its generated "valid" data is valid for keystile too."""

from __future__ import annotations

import base64
import time

import schemathesis
from hypothesis import strategies as st

from keystile.core.durations import format_instant

YEAR = 365 * 86400
_units = st.sampled_from(["s", "m", "h", "d"])
lifetime = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999), _units) | st.sampled_from(
    ["30d", "1h30m", "5217w", "36525d"]
)
schemathesis.openapi.format("keystile-lifetime", lifetime)
schemathesis.openapi.format("keystile-duration", lifetime | st.just("0"))
schemathesis.openapi.format(
    "keystile-expiry",
    st.integers(3600, 99 * YEAR).map(lambda ahead: format_instant(time.time() + ahead)),
)
schemathesis.openapi.format(
    "keystile-instant", st.integers(0, 4_000_000_000).map(lambda at: format_instant(at))
)
# addresses by keystile.emails' rules: ASCII dot-atoms, within its lengths
schemathesis.openapi.format(
    "keystile-email",
    st.emails().filter(lambda a: len(a) <= 254 and len(a.partition("@")[0]) <= 64),
)
addresses = st.ip_addresses().map(str)
networks = st.ip_addresses(v=4).map(lambda a: f"{a}/{24}") | st.ip_addresses(v=6).map(
    lambda a: f"{a}/64"
)
schemathesis.openapi.format("keystile-network", addresses | networks | st.just("*"))
schemathesis.openapi.format("keystile-address", addresses)
schemathesis.openapi.format("keystile-url", st.from_regex(r"\A(/[a-z0-9._-]{1,20}){1,4}\Z"))
cursors = st.integers(0, 2**31).map(lambda n: f"{n}.0|key_x".encode())
schemathesis.openapi.format(
    "keystile-cursor", cursors.map(lambda b: base64.urlsafe_b64encode(b).decode())
)
