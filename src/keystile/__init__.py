"""keystile: an external-auth sidecar for reverse proxies."""

__version__ = "0.1.0"
