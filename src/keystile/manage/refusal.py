"""A refusal any door can show: an HTTP status, an error type and a reason code
with a message. The admin API answers it as JSON, the pages as a page; the
service layer's permission rules (:mod:`keystile.manage.permissions`) raise it."""

from __future__ import annotations


class ApiError(Exception):
    """Refused: ``status`` (403...), ``type_`` (permission_error...), ``code``, ``message``."""

    def __init__(self, status: int, type_: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.code, self.message = status, type_, code, message
