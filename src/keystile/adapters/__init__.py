"""Protocol adapters: each turns one proxy's auth request into Facts and renders
the Decision in that proxy's dialect. Registered from this literal list."""

from __future__ import annotations

from keystile.adapters import nginx
from keystile.adapters.base import Adapter

ADAPTERS: tuple[Adapter, ...] = (nginx.ADAPTER,)

__all__ = ["ADAPTERS", "Adapter"]
