"""Pages a person uses, served by keystile under ``/_keystile/`` (through the proxy).

:mod:`keystile.web.signin`: the sign-in page, sign-out and "who am I". Pages
are Jinja2 templates (autoescaped) extending one layout, with one stylesheet
shipped in the package; every answer carries a strict Content-Security-Policy
and ``Cache-Control: no-store``.
"""
