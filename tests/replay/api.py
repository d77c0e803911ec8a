"""A minimal Docker Engine API client (stdlib only) for the endpoints a docker provider is given.

`unix:///path` and `tcp://host:port` are dialled directly; `ssh://user@host:port` goes through an
OpenSSH forward of the remote engine's socket to a local one (what `docker -H ssh://` does with
`docker system dial-stdio`), using the identity the replay is given.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

API_VERSION = "1.41"
TIMEOUT_S = 120


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, message: str):
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class DockerApi:
    """One engine endpoint. Each call opens its own connection, so threads can share an instance."""

    def __init__(self, host: str, ssh_options: list[str] | None = None):
        self.host = host
        self._forward: subprocess.Popen[bytes] | None = None
        parsed = urllib.parse.urlparse(host)
        if parsed.scheme == "unix":
            self._unix: str | None = parsed.path
            self._tcp: tuple[str, int] | None = None
        elif parsed.scheme == "tcp":
            self._unix, self._tcp = None, (parsed.hostname or "127.0.0.1", parsed.port or 2375)
        elif parsed.scheme == "ssh":
            self._unix, self._tcp = self._ssh_forward(parsed, ssh_options or []), None
        else:
            raise ValueError(f"docker provider host {host!r}: the replay reaches unix://, tcp:// and ssh:// only")

    def _ssh_forward(self, url: urllib.parse.ParseResult, options: list[str]) -> str:
        local = Path(tempfile.mkdtemp(prefix="se-fwd-", dir="/tmp")) / "docker.sock"
        target = f"{url.username or 'root'}@{url.hostname}"
        self._forward = subprocess.Popen(
            ["ssh", *options, "-p", str(url.port or 22), "-N", "-o", "ExitOnForwardFailure=yes",
             "-L", f"{local}:/var/run/docker.sock", target],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._forward.poll() is not None:
                err = self._forward.stderr.read().decode() if self._forward.stderr else ""
                raise RuntimeError(f"ssh forward to {self.host} failed: {err.strip()}")
            if local.exists():
                return str(local)
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"ssh forward to {self.host} did not come up within 30s")

    def close(self) -> None:
        if self._forward is not None:
            self._forward.terminate()
            try:
                self._forward.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._forward.kill()
                self._forward.wait(timeout=10)
            self._forward = None
            if self._unix is not None:
                shutil.rmtree(Path(self._unix).parent, ignore_errors=True)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, timeout)
        assert self._tcp is not None
        return http.client.HTTPConnection(*self._tcp, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
        raw: bytes | None = None, content_type: str = "application/json", timeout: float = TIMEOUT_S,
    ) -> Any:
        url = f"/v{API_VERSION}{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn = self._connection(timeout)
        try:
            headers = {"Content-Type": content_type} if payload is not None else {}
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            try:
                message = json.loads(data).get("message", data.decode(errors="replace"))
            except ValueError:
                message = data.decode(errors="replace")
            raise ApiError(response.status, method, path, message)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, body, query=query or None)

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query=query or None)

    def upload(self, container: str, files: list[tuple[str, bytes, int]]) -> None:
        """Put files (absolute path, content, mode) into a created container (PUT /archive)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, content, mode in files:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(content), mode, int(time.time())
                tar.addfile(info, io.BytesIO(content))
        self.request("PUT", f"/containers/{container}/archive", query={"path": "/"}, raw=buffer.getvalue(),
                     content_type="application/x-tar")
