"""Limits and usage: rate limits (per process and shared in Redis), quotas, token
budgets and their reservations, and the usage meter. (How usage reports arrive,
nginx's syslog lines and Envoy's access-log stream, is a listener: serve.intake.)

May import: ``core``, ``store``, ``observe``. Never ``serve``.
"""
