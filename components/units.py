"""Durations, sizes and CPU counts: the one parser of each, following Docker's own (Go's time.ParseDuration,
docker/go-units), used by the model, the compose import, the renderers and the tests alike."""

from __future__ import annotations

import re

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DAY_NS = 24 * 3600 * 10**9
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(value: object, *, days: bool = False) -> int:
    """Go's time.ParseDuration (what the compose loader and the Docker CLI use) -> nanoseconds.

    `days=True` also takes a `d` unit, as HAProxy's time format does (the model's durations end up in
    HAProxy and keepalived configs); Go itself has no days."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a duration (write e.g. 10s, 1m30s, 500ms)")
    text = str(value).strip()
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or (match.group(2) == "d" and not days):
            raise ValueError(f"{value!r} is not a duration (write e.g. 10s, 1m30s, 500ms)")
        total += float(match.group(1)) * (_DAY_NS if match.group(2) == "d" else _UNITS_NS[match.group(2)])
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return int(round(total))


def go_duration(ns: int) -> str:
    """Nanoseconds -> Go's canonical duration text (what the provider and the Swarm API print)."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{_trim(ns / 1_000)}µs"
    if ns < 10**9:
        return f"{_trim(ns / 1_000_000)}ms"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _trim(rest / 10**9)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def service_duration(ns: int) -> str:
    """Nanoseconds -> the text the docker provider reads a service's duration back as: Go's, with a trailing
    `0s` after minutes and `0m` after hours dropped (kreuzwerker's shortDur: 2m, 1h, 1m30s). A service given
    any other spelling of the same time (120s, 2m0s) would be planned as an update by every preview."""
    text = go_duration(ns)
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


def _trim(number: float) -> str:
    return f"{number:.9f}".rstrip("0").rstrip(".")


_RAM = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$", re.IGNORECASE)
_RAM_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def parse_bytes(value: object) -> int:
    """docker/go-units RAMInBytes: 512k, 50M, 1.5g, 1GiB -> bytes (binary multiples, as Docker)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _RAM.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a size (write e.g. 512M, 1G or a byte count)")
    return int(float(match.group(1)) * _RAM_UNITS[match.group(2).lower()])


def parse_nano_cpus(value: object) -> int:
    try:
        cpus = float(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a CPU count (write e.g. '0.5')") from None
    if cpus < 0:
        raise ValueError(f"{value!r}: CPUs cannot be negative")
    return int(round(cpus * 1e9))


def duration_ms(value: str) -> int:
    """A model duration (HAProxy's time format: 500ms, 2s, 5m, 1d) in milliseconds."""
    return parse_duration(value, days=True) // 1_000_000
