"""The pure core: the rules and the facts they judge, framework-free.

``decide`` (screen a request, judge a key against routes, scopes, allowlists and
limits), the request facts (paths, methods, credentials, copies, cookies, client
addresses, origins), the key format, the record model, reason codes, and the
small framework-free primitives every layer shares (errors, durations, numbers,
emails, URLs; ``flights``: deadlines that need no task).

May import: the standard library and ``core`` itself. No aiohttp, no store, no
I/O of its own (checked by import-linter, see pyproject.toml).
"""
