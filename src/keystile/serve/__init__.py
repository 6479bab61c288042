"""Serving auth requests: the listeners (the fast HTTP one, gRPC, the usage
intake), the proxy dialects (``adapters``, one registry), the gate that resolves a credential and
gathers limit state before asking the core, the key and session caches, health,
ports and workers.

May import: ``core``, ``limits``, ``observe``, ``store`` (the key lookup). Never
``admin``, ``web`` or ``cli``.
"""
