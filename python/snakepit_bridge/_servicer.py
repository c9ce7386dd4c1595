"""What both WorkerService flavours (the grpcio sync server in _sync.py and
grpc.aio in _aio.py) share: the tool list, call preparation and the replies
that do not depend on how a call is run. One place, so the two cannot drift
apart on what the host is told or how arguments are checked."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, Optional, Tuple

import grpc

from ._logging import log
from . import _batch_run
from .adapter import ToolInfo, collect_tools
from .codec import ArgumentsError, InvalidArgs, decode_args, invalid_args_error, tool_error
from .context import HostClient, SessionContext
from . import _wire as wire


#: The service's full name, as in proto/snakepit/v1/snakepit.proto.
SERVICE = "snakepit.v1.WorkerService"


def registered_handler(servicer: Any) -> Any:
    """WorkerService's method handlers for ``servicer`` (sync or aio), as one
    generic handler, with the hand-coded messages of _wire.py as the
    (de)serializers: what the generated ``add_WorkerServiceServicer_to_server``
    would register, without importing protobuf. Calls are routed by grpc
    itself: no wrapper per call."""
    # Every reply is a wire.Message: its one encoder, taken unbound, is
    # gRPC's response serializer for all of them.
    ser = wire.Message.SerializeToString
    handlers = {
        "Ping": grpc.unary_unary_rpc_method_handler(
            servicer.Ping, request_deserializer=wire.PingRequest.FromString, response_serializer=ser
        ),
        "DescribeTools": grpc.unary_unary_rpc_method_handler(
            servicer.DescribeTools, request_deserializer=wire.DescribeToolsRequest.FromString, response_serializer=ser
        ),
        "ExecuteTool": grpc.unary_unary_rpc_method_handler(
            servicer.ExecuteTool, request_deserializer=wire.ExecuteToolRequest.FromString, response_serializer=ser
        ),
        "ExecuteStreamingTool": grpc.unary_stream_rpc_method_handler(
            servicer.ExecuteStreamingTool, request_deserializer=wire.ExecuteToolRequest.FromString, response_serializer=ser
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class _NotBatch(Exception):
    """A batch request for a tool that takes one call at a time."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.error = _batch_run.not_batch_error(name)


class ServicerBase:
    def __init__(
        self,
        adapter: object,
        *,
        adapter_name: str = "",
        worker_id: str = "",
        run_id: str = "",
        host: Optional[HostClient] = None,
        tools: Optional[Dict[str, ToolInfo]] = None,
    ) -> None:
        self.adapter = adapter
        self.adapter_name = adapter_name or f"{type(adapter).__module__}.{type(adapter).__qualname__}"
        self.worker_id = worker_id
        self.run_id = run_id
        self.host = host
        self.tools = tools if tools is not None else collect_tools(adapter)
        self.started = time.monotonic()

    def _announce_ready(self, proc: Any, host: str, port: int, flavour: str) -> None:
        """Write the handshake line (the host then connects) and log it; a host
        that is gone ends the process."""
        try:
            proc.handshake(host, port)
        except OSError as e:
            proc.die_now(f"cannot write the handshake line ({e}): host gone")
        log.info("ready: adapter %s, %d tool(s), listening on %s:%d (%s)", self.adapter_name, len(self.tools), host, port, flavour)

    def _ping(self, request: wire.PingRequest, abandoned: Tuple[int, float, Any]) -> wire.PingResponse:
        count, oldest, ids = abandoned
        return wire.PingResponse(
            message=request.message,
            pid=os.getpid(),
            worker_id=self.worker_id,
            uptime_seconds=time.monotonic() - self.started,
            abandoned_calls=count,
            oldest_abandoned_seconds=oldest,
            abandoned_request_ids=ids,
        )

    def _describe(self) -> wire.DescribeToolsResponse:
        return wire.DescribeToolsResponse(
            tools=[self._spec_msg(self.tools[n]) for n in sorted(self.tools)],
            adapter=self.adapter_name,
            python_version=sys.version.split()[0],  # platform.python_version(), without importing platform
            pid=os.getpid(),
        )

    @staticmethod
    def _spec_msg(info: ToolInfo) -> wire.ToolSpec:
        s = info.spec
        return wire.ToolSpec(
            name=s.name,
            description=s.description,
            supports_streaming=s.supports_streaming,
            max_concurrency=s.max_concurrency,
            timeout_seconds=s.timeout,
            returns=s.returns,
            doc=s.doc,
            batch_max_size=s.batch_max_size,
            batch_max_wait_ms=s.batch_max_wait_ms,
            parameters=[
                wire.ParamSpec(
                    name=p.name,
                    type=p.type,
                    required=p.required,
                    default_json=p.default_json,
                    description=p.description,
                )
                for p in s.parameters
            ],
        )

    def _unknown_tool(self, name: str) -> wire.ToolError:
        # The message is exactly the comma-separated list of available
        # tools, so the host can split it without parsing prose.
        return tool_error("UnknownTool", ", ".join(sorted(self.tools)))

    def _context(self, request: wire.ExecuteToolRequest) -> SessionContext:
        return SessionContext._for_call(
            request.session_id,
            request.request_id,
            self.worker_id,
            self.run_id,
            request.metadata,
            request.tool_name,
            self.host,
        )

    def _admit(
        self, info: ToolInfo, request: wire.ExecuteToolRequest, sctx: SessionContext
    ) -> Tuple[Dict[str, Any], Optional[_batch_run.Prepared], Optional[wire.ExecuteToolResponse]]:
        """An Execute call's keyword arguments and its batch (None unless the
        tool is a batch tool), or the response that refuses it: arguments
        that do not fit, a batch sent to a tool that is not one, or a batch
        whose every call was refused."""
        try:
            if info.batch is None and not request.batch:
                return self._prepare(info, request, sctx), None, None
            prep = self._prepare_batch(info, request, sctx)
            refused = prep.all_refused()
            if refused is not None:
                return {}, None, refused
            return prep.kwargs, prep, None
        except InvalidArgs as e:
            return {}, None, wire.ExecuteToolResponse(error=invalid_args_error(e))
        except _NotBatch as e:
            return {}, None, wire.ExecuteToolResponse(error=e.error)

    def _prepare_batch(self, info: ToolInfo, request: wire.ExecuteToolRequest, sctx: SessionContext) -> _batch_run.Prepared:
        """A batch tool's request (or a single call of it, a batch of one),
        checked call by call. Raises _NotBatch for a batch request to a
        tool that is not a batch tool."""
        if info.batch is None:
            raise _NotBatch(info.name)
        make = _batch_run.context_maker(self.worker_id, self.run_id, info.name, self.host)
        return _batch_run.prepare(info, request, sctx, make)

    def _prepare(self, info: ToolInfo, request: wire.ExecuteToolRequest, sctx: SessionContext) -> Dict[str, Any]:
        """Decoded, checked keyword arguments, context included.

        Raises InvalidArgs (ArgumentsError when undecodable): they do not fit
        the signature or its type hints. Checking up front keeps a wrong call
        from ever running the tool, and keeps TypeErrors the tool raises
        itself distinguishable.
        """
        kwargs = decode_args(request.args_json, request.binary_args)
        if info.context_param is not None:
            if info.context_param in kwargs:
                raise ArgumentsError(
                    f"argument {info.context_param!r} of tool {info.name!r} is reserved for the session context"
                )
            kwargs[info.context_param] = sctx
        info.fits_kwargs(kwargs)
        if info.check is not None:
            info.check(kwargs)
        return kwargs
