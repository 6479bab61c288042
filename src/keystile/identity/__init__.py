"""Who a person is: browser sessions, passwords and the sign-in throttle, OpenID
Connect (ID tokens, the provider) and self-service keys.

May import: ``core``, ``store``, ``manage``.
"""
