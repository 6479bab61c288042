from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from keystile.clientip import TrustedProxies, parse_networks

TRUSTED = TrustedProxies(parse_networks(["127.0.0.0/8"]))


def mocked(method: str, path: str, headers: dict[str, str], peer: str = "127.0.0.1") -> web.Request:
    """A request as an adapter sees it, from ``peer``."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    return make_mocked_request(method, path, headers=headers, transport=transport)
