"""The floor: the least an aiohttp auth endpoint can do (uvloop, one dict lookup,
one header). keystile is measured against it.

    python -m tests.benchmarks.floor PORT KEY
"""

import sys

import uvloop
from aiohttp import web


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    known = {key: "key_floor"}

    async def auth(request: web.Request) -> web.Response:
        key_id = known.get(request.headers.get("x-api-key", ""))
        if key_id is None:
            return web.Response(status=401)
        return web.Response(headers={"X-Keystile-Key-Id": key_id})

    app = web.Application()
    app.router.add_route("*", "/auth/nginx", auth)
    app.router.add_route("*", "/auth/envoy/{tail:.*}", auth)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                loop=uvloop.new_event_loop())  # fmt: skip


if __name__ == "__main__":
    main()
