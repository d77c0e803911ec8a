"""Process lifecycle: the launch protocol the engine expects from a language plugin.

The engine (``sdk/go/common/resource/plugin/plugin.go``) starts the plugin, reads one line from its stdout - the
port of the gRPC server it listens on at 127.0.0.1 - and from then on shows anything else the plugin writes to
stdout/stderr as diagnostics.  It checks the connection with a dummy call (any answer but UNAVAILABLE will do) and
stops the plugin by sending SIGINT to its process group, killing it 5 seconds later if it is still there.

Like the Go host, this one also stops serving when the engine stops answering its health check (polled every five
minutes), so that a host orphaned by a crashed CLI does not linger.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import grpc
from pulumi.runtime.proto import language_pb2_grpc

from pulumi_langhost.cli import LaunchOptions, UsageError, parse_args
from pulumi_langhost.runtime import PythonLanguageRuntime

log = logging.getLogger("pulumi_langhost")

_MAX_MESSAGE_BYTES = 400 * 1024 * 1024  # the engine's limit (rpcutil.maxRPCMessageSize)
_HEALTH_INTERVAL_SECONDS = 5 * 60
_HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
_STOP_GRACE_SECONDS = 3.0


def _configure_logging(options: LaunchOptions) -> None:
    """``-v=N --logtostderr`` (sent by the engine under ``--logflow``) turns on debug logs on stderr."""
    logger = logging.getLogger("pulumi_langhost")
    if options.log_to_stderr and options.verbose > 0:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pulumi-language-python: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if options.verbose >= 5 else logging.INFO)
    else:
        logger.addHandler(logging.NullHandler())


def _bytes_identity(data: bytes) -> bytes:
    return data


def _watch_engine(address: str, stop: threading.Event) -> None:
    """Poll the engine's gRPC health service; stop serving once it is gone (UNIMPLEMENTED counts as alive)."""
    with grpc.insecure_channel(address) as channel:
        # grpcio-health-checking is not a dependency: an empty HealthCheckRequest is simply zero bytes.
        check = channel.unary_unary(
            _HEALTH_CHECK_METHOD, request_serializer=_bytes_identity, response_deserializer=_bytes_identity
        )
        while not stop.wait(_HEALTH_INTERVAL_SECONDS):
            try:
                check(b"", timeout=60)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code != grpc.StatusCode.UNIMPLEMENTED:
                    log.info("engine at %s is gone (%s); shutting down", address, code)
                    stop.set()
                    return


def main(argv: Sequence[str]) -> int:
    try:
        options = parse_args(argv)
    except UsageError as err:
        print(f"pulumi-language-python: {err}", file=sys.stderr)
        return 2
    _configure_logging(options)

    # The real host finds the executor next to its own binary; the generated launcher always names it.
    executor = options.executor
    if not executor:
        print("error: no executor given: pass --use-executor PATH/pulumi-language-python-exec", file=sys.stderr)
        return 1
    if not os.path.isfile(executor):
        print(f"error: missing executor {executor}", file=sys.stderr)
        return 1

    stop = threading.Event()
    watched: set[str] = set()
    watched_lock = threading.Lock()

    def watch(address: str) -> None:
        with watched_lock:
            if not address or address in watched:
                return
            watched.add(address)
        threading.Thread(target=_watch_engine, args=(address, stop), name="engine-health", daemon=True).start()

    runtime = PythonLanguageRuntime(executor, options.engine_address, options.tracing, on_engine_address=watch)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=16, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ],
    )
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(runtime, server)
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        print("error: could not start language host RPC server: no port to listen on", file=sys.stderr)
        return 1
    server.start()
    watch(options.engine_address)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.debug("received signal %d; shutting down", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # The one line the engine waits for.
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()

    # A timed wait keeps the main thread responsive to signals.
    while not stop.wait(1.0):
        pass
    server.stop(_STOP_GRACE_SECONDS).wait()
    return 0
