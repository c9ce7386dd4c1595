"""The baseline of the side-by-side benchmark: a minimal grpcio *sync* servicer.

It serves snakepit's own WorkerService messages (so the wire work is the
same as a snakepit worker's) and does the same JSON work as the showcase
adapter's ``add`` tool: decode ``args_json``, add ``a`` and ``b``, encode the
result. Nothing else: no context, no thread hop, no cancellation tracking.
Called as "blob" it returns ``n`` zero bytes as ``Payload.binary``: raw gRPC
bytes, the baseline of the array benchmark (array_test.go).

It also serves what a hashicorp/go-plugin host needs from a gRPC plugin —
the grpc.health.v1 Health service ("plugin" is SERVING) and
plugin.GRPCController/Shutdown — by hand with generic handlers, because
Debian's python3-grpcio has no grpc_health module. Their messages are tiny
and written as raw protobuf bytes.

Handshake on stdout (go-plugin's format, also parsed by the raw benchmark):

    1|1|tcp|127.0.0.1:PORT|grpc

The process exits on SIGTERM, when its parent changes, and (with
BENCH_WATCH_STDIN=1) when its stdin reaches EOF. Run with
PYTHONPATH=<repo>/python so snakepit_bridge.pb imports.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys
import threading
import time

import grpc

from snakepit_bridge.pb import snakepit_pb2 as pb
from snakepit_bridge.pb import snakepit_pb2_grpc as pb_grpc


class MinimalServicer(pb_grpc.WorkerServiceServicer):
    def ExecuteTool(self, request, context):
        kwargs = json.loads(request.args_json) if request.args_json else {}
        if request.tool_name == "blob":  # raw gRPC bytes: the baseline of BenchmarkArray4MiBPaired
            return pb.ExecuteToolResponse(result=pb.Payload(binary=b"\x00" * kwargs["n"]))
        value = kwargs["a"] + kwargs["b"]
        data = json.dumps(value).encode()  # the default options: json's cached encoder
        return pb.ExecuteToolResponse(result=pb.Payload(json=data))

    def Ping(self, request, context):
        return pb.PingResponse(message=request.message, pid=os.getpid())


# grpc.health.v1.HealthCheckResponse{status: SERVING} is field 1 (varint) = 1.
_SERVING = b"\x08\x01"


def _health_check(request: bytes, context) -> bytes:
    return _SERVING


def _shutdown(request: bytes, context) -> bytes:
    threading.Thread(target=lambda: os._exit(0), daemon=True).start()
    return b""  # google.protobuf.Empty


def _identity(b: bytes) -> bytes:
    return b


def _plugin_handlers() -> list:
    health = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                _health_check, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    controller = grpc.method_handlers_generic_handler(
        "plugin.GRPCController",
        {
            "Shutdown": grpc.unary_unary_rpc_method_handler(
                _shutdown, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    return [health, controller]


def _watch_stdin() -> None:
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    os._exit(0)


def _watch_parent() -> None:
    ppid = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(0)


def main() -> None:
    threads = int(os.environ.get("BENCH_THREADS", "8"))
    # 64 MiB like a snakepit worker, so BenchmarkArgs can send 4 MiB arguments.
    limit = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=threads), options=limit)
    pb_grpc.add_WorkerServiceServicer_to_server(MinimalServicer(), server)
    server.add_generic_rpc_handlers(_plugin_handlers())
    sock = os.environ.get("BENCH_UNIX", "")  # a Unix socket path instead of loopback TCP
    port = server.add_insecure_port("unix:" + sock if sock else "127.0.0.1:0")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if os.environ.get("BENCH_WATCH_STDIN") == "1":  # go-plugin hands the plugin the host's own stdin
        threading.Thread(target=_watch_stdin, daemon=True).start()
    threading.Thread(target=_watch_parent, daemon=True).start()
    sys.stdout.write(f"1|1|unix|{sock}|grpc\n" if sock else f"1|1|tcp|127.0.0.1:{port}|grpc\n")
    sys.stdout.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
