"""Observability: Prometheus metrics and structured JSON logs.

May import: ``core`` (and the key cache's figures).
"""
