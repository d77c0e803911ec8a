"""A bounded load generator for a running estate: a fixed request rate for a fixed time.

    load = Load(Target("https://127.0.0.1:8443", "demo.dev.localhost"), rate=25, duration=20).start()
    ...                                # break something
    result = load.wait()               # returns once the last request is answered or timed out
    result.failed, result.replicas(), result.window()

Requests go to loopback entry points only (anything else is refused),
each with a `Host` header and without a cookie, so the L7's balancing (not stickiness) picks the
replica. Sends are scheduled at t0 + i/rate on a small thread pool, so a slow answer does not
slow the rate down (an open-loop client, as real clients are). Every request is recorded: when it
was sent (wall clock, comparable with the swarm's task timestamps), how long it took, its status,
which replica answered (`/hostname` of the demo app) and the error, if any.

A `fallback` entry point is tried once when the first answer is a failure: the client-side retry
to the other L7 replica that an estate without an L4 in front relies on. Only scenarios that say so
pass one. `python -m tests.harness.loadgen URL HOST` runs one load and prints its summary.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

# Longer than HAProxy's `timeout connect` (5 s): a request HAProxy first sent to a replica that
# vanished without a reset is redispatched after that timeout, and is slow but not failed.
REQUEST_TIMEOUT_S = 15
MAX_RATE = 200  # req/s: a load generator for behaviour, not a stress test
MAX_DURATION_S = 600
WORKERS = 16


@dataclass(frozen=True)
class Target:
    entrypoint: str  # http(s)://127.0.0.1:port
    host: str  # the Host header (and SNI)
    path: str = "/hostname"
    fallback: str | None = None  # the other L7 entry point, tried once after a failure


@dataclass(frozen=True)
class Sample:
    sent: float  # wall clock (time.time()) when sent
    elapsed: float  # seconds until the final answer (retry included)
    status: int | None  # None: no HTTP answer at all
    replica: str | None  # the body of /hostname: the answering task's container hostname
    entrypoint: str  # where the final answer came from
    retried: bool  # the first entry point failed and the fallback was asked
    error: str | None  # why the first attempt failed (kept even when the retry succeeded)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


@dataclass
class LoadResult:
    target: Target
    rate: float
    duration: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def retried(self) -> list[Sample]:
        return [s for s in self.samples if s.retried]

    def answered_by_fallback(self) -> list[Sample]:
        return [s for s in self.samples if s.retried and s.ok and s.entrypoint == self.target.fallback]

    def replicas(self) -> set[str]:
        return {s.replica for s in self.samples if s.ok and s.replica}

    def first_failures(self) -> list[Sample]:
        """Samples whose first attempt failed (whether or not a retry saved them)."""
        return [s for s in self.samples if s.error is not None]

    def window(self) -> float:
        """Seconds from the first to the last request whose first attempt failed (0 when none did),
        plus one send interval: the span during which this entry point did not answer."""
        bad = self.first_failures()
        if not bad:
            return 0.0
        return max(s.sent for s in bad) - min(s.sent for s in bad) + 1 / self.rate

    def summary(self) -> str:
        lat = sorted(s.elapsed for s in self.samples if s.ok) or [0.0]
        return (f"{len(self.samples)} requests at {self.rate:g}/s for {self.duration:g}s: "
                f"{len(self.failed)} failed, {len(self.retried)} retried, "
                f"{len(self.answered_by_fallback())} answered by the fallback, replicas {sorted(self.replicas())}, "
                f"p50 {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")


class Load:
    """One stream of requests; `start()` returns at once, the stream stops by itself after `duration`."""

    def __init__(self, target: Target, rate: float = 25, duration: float = 20):
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate {rate} req/s: use 0 < rate <= {MAX_RATE}")
        if not 0 < duration <= MAX_DURATION_S:
            raise ValueError(f"duration {duration}s: use 0 < duration <= {MAX_DURATION_S}")
        self.target, self.rate, self.duration = target, rate, duration
        self._result = LoadResult(target, rate, duration)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        """End early (no new sends) and wait for the requests in flight."""
        self.halt()
        return self.wait()

    def answered(self) -> int:
        """Requests answered so far (any answer: a scenario waits for the load to run, not to succeed)."""
        with self._lock:
            return sum(1 for s in self._result.samples if s.status is not None)

    def halt(self) -> None:
        """No new sends from now on (several streams end together: halt all, then `wait` each)."""
        self._stop.set()

    def wait(self) -> LoadResult:
        self._thread.join(self.duration + 3 * REQUEST_TIMEOUT_S + 10)
        if self._thread.is_alive():
            raise RuntimeError("the load generator did not finish within its bound")
        with self._lock:
            self._result.samples.sort(key=lambda s: s.sent)
            return self._result

    def _run(self) -> None:
        total = int(self.rate * self.duration)
        start = time.monotonic()
        futures: list[Future[None]] = []
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="loadgen") as pool:
            for i in range(total):
                delay = start + i / self.rate - time.monotonic()
                if self._stop.wait(max(0.0, delay)):
                    break
                futures.append(pool.submit(self._one))
        for f in futures:
            f.result()

    def _one(self) -> None:
        sent, t0 = time.time(), time.monotonic()
        status, replica, error = _attempt(self.target.entrypoint, self.target)
        entrypoint, retried, first_error = self.target.entrypoint, False, None
        if not (status is not None and 200 <= status < 400):
            first_error = error or f"HTTP {status}"
            if self.target.fallback:
                retried, entrypoint = True, self.target.fallback
                status, replica, _ = _attempt(self.target.fallback, self.target)
        sample = Sample(sent, time.monotonic() - t0, status, replica, entrypoint, retried, first_error)
        with self._lock:
            self._result.samples.append(sample)


def get(entrypoint: str, host: str, path: str) -> tuple[int, str]:
    """One GET to a loopback entry point with `Host: host` (and SNI), no cookie: (status, body)."""
    url = urllib.parse.urlparse(entrypoint)
    if url.hostname != "127.0.0.1":
        raise ValueError(f"load goes to loopback only, not {entrypoint}")
    if url.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the estate's self-signed certificate
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", url.port, timeout=REQUEST_TIMEOUT_S, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _attempt(entrypoint: str, target: Target) -> tuple[int | None, str | None, str | None]:
    try:
        status, body = get(entrypoint, target.host, target.path)
    except Exception as exc:  # any failure to get an answer is a failed request, recorded with its cause
        return None, None, f"{type(exc).__name__}: {exc}"
    replica = body.strip()[:64] if 200 <= status < 300 else None
    return status, replica, None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("entrypoint", help="http(s)://127.0.0.1:port")
    parser.add_argument("host", help="Host header")
    parser.add_argument("--path", default="/hostname")
    parser.add_argument("--fallback", help="the other L7 entry point, tried once after a failure")
    parser.add_argument("--rate", type=float, default=25)
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    result = Load(Target(args.entrypoint, args.host, args.path, args.fallback), args.rate, args.duration).start().wait()
    print(result.summary())


if __name__ == "__main__":
    main()
