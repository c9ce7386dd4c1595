"""Auth: the run's token, checked on every RPC by a server interceptor.

When the host sets ``SNAKEPIT_TOKEN``, every RPC must carry it in the
``x-snakepit-token`` metadata entry, or fails with UNAUTHENTICATED before
its request is parsed. :meth:`TokenCheck.check` is the one check; both
server flavours install it as an interceptor — :class:`SyncTokenInterceptor`
on grpcio's sync server, :class:`TokenInterceptor` on grpc.aio — which
differ only in how grpc calls them (a plain call, a coroutine) and how the
denial aborts. Without a token no interceptor is installed, so a worker
without one pays nothing.

Cost (docs/BENCHMARKS.md): the sync call path is tuned to a few µs, so the
check compares ``str`` with ``str`` (grpc hands metadata values over as
``str``; no encode per call), an authorized call goes straight to the
continuation, and the sync interceptor's ``intercept_service`` *is* the
check (no frame in between).
"""

from __future__ import annotations

from _operator import _compare_digest
from typing import Any, Callable, Optional

import grpc

from ._logging import log
from .context import TOKEN_METADATA_KEY

__all__ = ["TokenCheck", "SyncTokenInterceptor", "TokenInterceptor"]

_DENIED = f"missing or invalid {TOKEN_METADATA_KEY} metadata"
# Module globals, not attribute lookups: this runs on every RPC.
_KEY = TOKEN_METADATA_KEY
# hmac.compare_digest's constant-time comparison, without importing hmac
# (hashlib, OpenSSL's _hashlib: milliseconds at every worker start).
_compare = _compare_digest

Continuation = Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler]]


class TokenCheck:
    """The token check, shared by both interceptors."""

    @staticmethod
    def _deny(request: Any, context: Any) -> Any:
        """How a denied call ends (grpcio's sync server)."""
        context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("a token check needs a token (without one, install no interceptor)")
        self._token = token.encode("utf-8")
        self._token_str = token

    def check(self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails) -> Any:
        """``continuation``'s handler when the call carries the token, else a
        handler that fails it with UNAUTHENTICATED (None for an unknown method:
        grpc answers UNIMPLEMENTED). Written out in one function: it runs for
        every RPC."""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == _KEY:
                if type(value) is str:
                    try:  # str against str: no encoding on every call
                        ok = _compare(value, self._token_str)
                    except TypeError:  # not ASCII: compare the bytes
                        ok = _compare(value.encode("utf-8"), self._token)
                else:
                    ok = _compare(bytes(value), self._token)
                if ok:
                    return continuation(handler_call_details)
                break
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        log.warning("rejected %s: missing or wrong %s", handler_call_details.method, TOKEN_METADATA_KEY)
        # No deserializer: a rejected request is never parsed.
        deny = self._deny
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(deny)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(deny)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(deny)
        return grpc.stream_stream_rpc_method_handler(deny)


class SyncTokenInterceptor(TokenCheck, grpc.ServerInterceptor):
    """The token check on grpcio's sync server."""

    intercept_service = TokenCheck.check


class TokenInterceptor(TokenCheck, grpc.aio.ServerInterceptor):
    """The token check on grpc.aio."""

    @staticmethod
    async def _deny(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.check(lambda _: handler, handler_call_details)
