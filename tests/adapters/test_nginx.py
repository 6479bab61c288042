"""nginx dialect specifics: what each Decision becomes."""

import orjson

from keystile.core import reasons
from keystile.core.decide import Decision, Grant
from keystile.serve.adapters.nginx import render as render_reply

from .conftest import viewing

render = viewing(render_reply)


def test_allow_is_200_with_upstream_headers() -> None:
    response = render(Decision(None), Grant((("X-Keystile-Key-Id", "key_1"), ("A", "b")), ()))
    assert response.status == 200
    assert response.headers["X-Keystile-Key-Id"] == "key_1" and response.headers["A"] == "b"


def test_rate_limit_travels_as_403_with_status_header() -> None:
    response = render(Decision(reasons.RATE_LIMITED, retry_after=7))
    assert response.status == 403
    assert response.headers["X-Keystile-Status"] == "429"
    assert response.headers["Retry-After"] == "7"
    assert orjson.loads(response.body)["error"]["type"] == "rate_limit_error"


def test_401_carries_www_authenticate_and_json() -> None:
    response = render(Decision(reasons.EXPIRED_API_KEY))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="keystile"')
    assert response.headers["X-Keystile-Reason"] == "expired_api_key"
    assert orjson.loads(response.body) == {
        "error": {"message": "This API key has expired.", "type": "authentication_error",
                  "code": "expired_api_key"}
    }  # fmt: skip


def test_every_reason_message_is_safe_inside_nginx_json() -> None:
    # the shipped nginx config pastes X-Keystile-Message into a JSON string
    for value in vars(reasons).values():
        if isinstance(value, reasons.Reason):
            assert '"' not in value.message and "\\" not in value.message
            assert value.message.isascii() and value.message.isprintable()
