"""The service layer: keys, users, teams and groups changed and read for the admin
API, the UI and the CLI (fields and their bounds, who may do what, one action per
submission, explain, import).

May import: ``core``, ``store``, ``serve`` (explain asks the gate), ``limits``.
"""
