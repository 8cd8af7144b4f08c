"""A gRPC server (grpcio, plaintext HTTP/2) for the h2c upstream tests: bytes in, bytes out, no protobuf.

Methods of service `test.Echo`:
- `Unary`: answers `echo:<request>`; the request `fail` aborts with NOT_FOUND "no such thing" and the
  trailer `x-detail: nope`; otherwise the trailer `x-origin: grpc` is set.
- `Stream`: request `N` or `N,ms`: N messages `msg i`, `ms` milliseconds apart (default 0).
- `Collect`: client streaming, answers the messages joined with `|`.
- `Chat`: bidirectional, echoes each message as `re:<message>`.

Prints the port it listens on (127.0.0.1, port 0 unless --port), then serves until killed or --seconds pass.
"""
from __future__ import annotations

import argparse
import time
from concurrent import futures

import grpc


def unary(request: bytes, context) -> bytes:
    if request == b"fail":
        context.set_trailing_metadata((("x-detail", "nope"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-origin", "grpc"),))
    return b"echo:" + request


def stream(request: bytes, context):
    count, _, ms = request.decode().partition(",")
    for i in range(int(count)):
        yield f"msg {i}".encode()
        if ms:
            time.sleep(int(ms) / 1000)


def collect(requests, context) -> bytes:
    return b"|".join(requests)


def chat(requests, context):
    for message in requests:
        yield b"re:" + message


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    handlers = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(port, flush=True)
    server.wait_for_termination(timeout=args.seconds)


if __name__ == "__main__":
    main()
