"""Generated files (HAProxy, cloud-init, keepalived configs, pictures) as the hosts receive them.

Components publish each artifact here while they register resources, so the offline synth can
write them under `files/` and tests can feed them to the real tool that consumes them. Text
published here must already be free of secrets: components render a redacted copy for it.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_files: dict[str, str] = {}

REDACTED = "[secret]"


def publish(path: str, text: str) -> None:
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"artifact path {path!r} must be relative and stay inside files/")
    with _lock:
        if path in _files and _files[path] != text:
            raise ValueError(f"artifact {path!r} published twice with different content")
        _files[path] = text


def collected() -> dict[str, str]:
    with _lock:
        return dict(sorted(_files.items()))


def reset() -> None:
    with _lock:
        _files.clear()
