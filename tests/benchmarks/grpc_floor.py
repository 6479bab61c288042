"""The gRPC floor: the least a grpcio asyncio ext_authz Check handler can do (uvloop,
as keystile serves; one dict lookup, one header). keystile's gRPC dialect is
measured against it.

    python -m tests.benchmarks.grpc_floor PORT KEY
"""

import asyncio
import sys
from typing import Any

import grpc
import uvloop
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse, OkHttpResponse
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2
from google.rpc.status_pb2 import Status

OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


async def serve(port: int, key: str) -> None:
    known = {key: "key_floor"}
    denied = CheckResponse(status=Status(code=code_pb2.UNAUTHENTICATED))
    denied.denied_response.status.CopyFrom(HttpStatus(code=401))

    async def check(request: CheckRequest, context: Any) -> CheckResponse:
        key_id = known.get(request.attributes.request.http.headers.get("x-api-key", ""))
        if key_id is None:
            return denied
        header = HeaderValue(key="X-Keystile-Key-Id", value=key_id)
        ok = OkHttpResponse(headers=[HeaderValueOption(header=header, append_action=OVERWRITE)])
        return CheckResponse(status=Status(code=code_pb2.OK), ok_response=ok)

    handler = grpc.unary_unary_rpc_method_handler(
        check,
        request_deserializer=CheckRequest.FromString,
        response_serializer=CheckResponse.SerializeToString,
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # registered: grpcio finds the handler in C (as keystile's does)
    server.add_registered_method_handlers("envoy.service.auth.v3.Authorization", {"Check": handler})
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(port, key))


if __name__ == "__main__":
    main()
