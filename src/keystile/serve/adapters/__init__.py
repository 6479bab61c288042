"""Protocol adapters: each turns one proxy's auth request into Facts and renders
the Decision in that proxy's dialect. Registered from this literal list."""

from __future__ import annotations

from keystile.serve.adapters import envoy_http, forward_auth, nginx
from keystile.serve.adapters.base import Adapter

ADAPTERS: tuple[Adapter, ...] = (nginx.ADAPTER, envoy_http.ADAPTER, forward_auth.ADAPTER)

__all__ = ["ADAPTERS", "Adapter"]
