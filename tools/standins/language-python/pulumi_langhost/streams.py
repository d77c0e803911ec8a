"""Where the output of helper commands (``python -m venv``, ``pip install``) goes.

The Go host writes that output either into the ``InstallDependencies`` response stream (optionally through a
pseudo-terminal when the CLI runs in one, so that pip draws its progress bars) or, when it creates a missing virtual
environment during ``GetRequiredPackages``, as ephemeral ``Log`` messages to the engine.  ``OutputSink`` is the
common shape of these destinations; ``run_streaming`` runs a command and forwards its output to one of them.
"""

from __future__ import annotations

import os
import pty
import queue
import random
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Protocol

import grpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, language_pb2

_CHUNK = 64 * 1024


class OutputSink(Protocol):
    """A destination for a helper command's stdout and stderr."""

    def write_out(self, data: bytes) -> None: ...

    def write_err(self, data: bytes) -> None: ...

    def stdout_fd(self) -> int | None:
        """A file descriptor a child may write its stdout to directly (a terminal), or None to use a pipe."""
        ...


def info(sink: OutputSink, message: str) -> None:
    """Print one progress line, like the toolchain's ``printmsg``."""
    sink.write_out(f"{message}\n".encode())


def run_streaming(argv: Sequence[str], env: Mapping[str, str], cwd: str | None, sink: OutputSink) -> tuple[int, str]:
    """Run ``argv``, forwarding its output to ``sink`` as it comes; return (exit status, captured stderr).

    stderr is also captured because the Go toolchain puts it into the error it returns when pip fails.
    """
    direct_fd = sink.stdout_fd()
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=direct_fd if direct_fd is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    captured: list[bytes] = []

    def pump(stream: IO[bytes], write: Callable[[bytes], None], keep: bool) -> None:
        # os.read returns whatever is available, so output is forwarded as it is produced, not when a buffer fills.
        forwarding = True
        while chunk := os.read(stream.fileno(), _CHUNK):
            if forwarding:
                try:
                    write(chunk)
                except (grpc.RpcError, OSError):
                    # The destination is gone (e.g. the engine stopped answering Log): keep draining the pipe so
                    # the child never blocks on it, and let it finish.
                    forwarding = False
            if keep:
                captured.append(chunk)
        stream.close()

    threads: list[threading.Thread] = []
    if proc.stdout is not None:
        threads.append(threading.Thread(target=pump, args=(proc.stdout, sink.write_out, False), daemon=True))
    if proc.stderr is not None:
        threads.append(threading.Thread(target=pump, args=(proc.stderr, sink.write_err, True), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return proc.wait(), b"".join(captured).decode(errors="replace").strip()


class EngineLogSink:
    """Sends output to the engine as ephemeral log messages (what the Go host's ``logWriter`` does)."""

    def __init__(self, engine_address: str) -> None:
        self._channel = grpc.insecure_channel(engine_address)
        self._engine = engine_pb2_grpc.EngineStub(self._channel)
        # One random stream id groups the messages into one updating block in the CLI's display.
        self._stream_id = random.randint(0, 2**31 - 1)

    def _log(self, severity: engine_pb2.LogSeverity.ValueType, data: bytes) -> None:
        self._engine.Log(
            engine_pb2.LogRequest(
                severity=severity,
                message=data.decode(errors="replace"),
                urn="",
                streamId=self._stream_id,
                ephemeral=True,
            )
        )

    def write_out(self, data: bytes) -> None:
        self._log(engine_pb2.INFO, data)

    def write_err(self, data: bytes) -> None:
        self._log(engine_pb2.ERROR, data)

    def stdout_fd(self) -> int | None:
        return None

    def close(self) -> None:
        self._channel.close()


_DONE = object()


class ResponseStreamSink:
    """Turns writes into ``InstallDependenciesResponse`` messages for a server-streaming RPC.

    Writes come from worker threads and are queued; ``responses()`` drains the queue in the gRPC handler's thread.
    When ``terminal`` is set, the output goes through a pseudo-terminal as in the Go host's ``makeStreams``: the
    child's stdout is the terminal itself, everything written arrives as stdout, with the terminal's line endings.
    """

    def __init__(self, terminal: bool) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._master: int | None = None
        self._slave: int | None = None
        self._reader: threading.Thread | None = None
        if terminal:
            try:
                self._master, self._slave = pty.openpty()
            except OSError as err:
                # Like the Go host: fall back to plain pipes, with a (coloured: the far side is a terminal) warning.
                self._queue.put(
                    language_pb2.InstallDependenciesResponse(
                        stderr=f"\x1b[33mwarning: could not open pty: {err}\x1b[0m\n".encode()
                    )
                )
            else:
                self._reader = threading.Thread(target=self._read_terminal, daemon=True)
                self._reader.start()

    def _read_terminal(self) -> None:
        assert self._master is not None
        while True:
            try:
                chunk = os.read(self._master, _CHUNK)
            except OSError:  # EIO once every writer to the terminal has closed it
                break
            if not chunk:
                break
            self._queue.put(language_pb2.InstallDependenciesResponse(stdout=chunk))

    def write_out(self, data: bytes) -> None:
        if self._slave is not None:
            os.write(self._slave, data)
        else:
            self._queue.put(language_pb2.InstallDependenciesResponse(stdout=data))

    def write_err(self, data: bytes) -> None:
        if self._slave is not None:
            os.write(self._slave, data)
        else:
            self._queue.put(language_pb2.InstallDependenciesResponse(stderr=data))

    def stdout_fd(self) -> int | None:
        return self._slave

    def finish(self) -> None:
        """Flush the terminal (if any) and end ``responses()``; call once the work is done."""
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self._reader is not None:
            self._reader.join()
        if self._master is not None:
            os.close(self._master)
            self._master = None
        self._queue.put(_DONE)

    def responses(self) -> Iterator[language_pb2.InstallDependenciesResponse]:
        while (item := self._queue.get()) is not _DONE:
            assert isinstance(item, language_pb2.InstallDependenciesResponse)
            yield item
