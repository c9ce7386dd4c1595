"""The token check (_auth): one check, a server interceptor on both flavours.

test_servicer.py covers auth through create_server / create_aio_server;
these pin the check itself and that the sync interceptor is an ordinary
grpc.ServerInterceptor (it also works through grpc.server(interceptors=)).
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
import pytest

from snakepit_bridge._auth import SyncTokenInterceptor, TokenCheck, TokenInterceptor
from snakepit_bridge.context import TOKEN_METADATA_KEY
from snakepit_bridge._servicer import registered_handler
from snakepit_bridge.pb import snakepit_pb2 as pb
from snakepit_bridge.pb import snakepit_pb2_grpc as pb_grpc
from snakepit_bridge.server import WorkerServicer

from sample_adapter import SampleAdapter


class Details:
    def __init__(self, metadata: Any, method: str = "/snakepit.v1.WorkerService/Ping") -> None:
        self.method = method
        self.invocation_metadata = metadata


HANDLER = grpc.unary_unary_rpc_method_handler(lambda request, context: None)


@pytest.mark.parametrize(
    "metadata, ok",
    [
        (((TOKEN_METADATA_KEY, "tok-é"),), True),
        ((("user-agent", "x"), (TOKEN_METADATA_KEY, "tok-é")), True),
        (((TOKEN_METADATA_KEY, "tok-é".encode("utf-8")),), True),  # bytes values
        (((TOKEN_METADATA_KEY, "tok-e"),), False),
        (((TOKEN_METADATA_KEY, ""),), False),
        ((("other", "tok-é"),), False),
        ((), False),
        (None, False),
    ],
)
def test_token_check(metadata, ok):
    got = TokenCheck("tok-é").check(lambda d: HANDLER, Details(metadata))
    assert (got is HANDLER) is ok
    if not ok:  # a denying handler of the same kind, without a deserializer
        assert got.unary_unary is not None and got.request_deserializer is None


def test_token_check_ascii_token_against_non_ascii_value():
    # compare_digest refuses non-ASCII str; the check compares the bytes then.
    check = TokenCheck("secret")
    assert check.check(lambda d: HANDLER, Details(((TOKEN_METADATA_KEY, "sécret"),))) is not HANDLER
    assert check.check(lambda d: HANDLER, Details(((TOKEN_METADATA_KEY, "secret"),))) is HANDLER


def test_token_check_unknown_method_is_left_to_grpc():
    assert TokenCheck("t").check(lambda d: None, Details(())) is None


def test_token_check_needs_a_token():
    with pytest.raises(ValueError):
        TokenCheck("")


def test_interceptors_are_grpc_interceptors():
    assert isinstance(SyncTokenInterceptor("t"), grpc.ServerInterceptor)
    assert isinstance(TokenInterceptor("t"), grpc.aio.ServerInterceptor)


def test_sync_interceptor_through_grpc_pipeline():
    servicer = WorkerServicer(SampleAdapter())
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[SyncTokenInterceptor("tok")])
    server.add_generic_rpc_handlers((registered_handler(servicer),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.WorkerServiceStub(ch)
            r = stub.Ping(pb.PingRequest(message="hi"), metadata=((TOKEN_METADATA_KEY, "tok"),), timeout=5)
            assert r.message == "hi"
            with pytest.raises(grpc.RpcError) as ei:
                stub.Ping(pb.PingRequest(), metadata=((TOKEN_METADATA_KEY, "nope"),), timeout=5)
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as ei:
                list(stub.ExecuteStreamingTool(pb.ExecuteToolRequest(tool_name="gen"), timeout=5))
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0).wait(5)
        servicer.close()
