from collections.abc import Callable
from typing import NamedTuple

from multidict import CIMultiDict

from keystile.core.clientip import TrustedProxies, parse_networks
from keystile.core.decide import Decision, Grant
from keystile.serve.adapters.base import Inbound, Reply

TRUSTED = TrustedProxies(parse_networks(["127.0.0.0/8"]))


def mocked(method: str, path: str, headers: dict[str, str], peer: str = "127.0.0.1") -> Inbound:
    """A request as an adapter sees it, from ``peer``."""
    host = headers.get("Host", "keystile:8700")
    return Inbound(method, path, host, CIMultiDict(headers), peer)


class Seen(NamedTuple):
    status: int
    headers: CIMultiDict[str]
    body: bytes


def viewing(
    render: Callable[[Decision, Grant | None], Reply],
) -> Callable[..., Seen]:
    """The adapter's renderer, its reply's headers looked up case-insensitively."""

    def view(decision: Decision, grant: Grant | None = None) -> Seen:
        reply = render(decision, grant)
        return Seen(reply.status, CIMultiDict(reply.headers), reply.body)

    return view
