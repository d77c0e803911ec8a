"""The L7 HAProxy configuration, rendered from the estate model and the routed services.

A pure function of `EstateSpec` and `Route`s: the same model always gives byte-identical text,
so the config's content hash (and with it the swarm config name) changes exactly when the
routing does. Backend membership is not rendered at all: each backend is a `server-template`
whose slots HAProxy fills by resolving `<stack>_<service>` against Docker's embedded DNS, which
answers a dnsrr service with the address of every running task (the D4Science set-up).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import EstateSpec, Route
from ..model.proxy import RateLimit
from ..units import duration_ms

# Paths inside the official haproxy image: its CMD reads CONFIG_PATH; the certificate
# directory is ours (swarm secrets are mounted there) and HAProxy loads every PEM in it.
CONFIG_PATH = "/usr/local/etc/haproxy/haproxy.cfg"
CERT_DIR = "/usr/local/etc/haproxy/certs"
DOCKER_DNS = "127.0.0.11:53"

UNKNOWN_HOST_BACKEND = "unknown-host"  # has no '_', so no `<stack>_<service>` backend can clash
RETRY_INTERVAL = "1s"  # `timeout retry`: a DNS query without an answer is sent again after this
SRC_STICK_EXPIRE = "180m"  # the seed's src stickiness: a client keeps its replica for 3 h of silence
SRC_STICK_SIZE = "2m"


SLOT_STEP = 10


def template_slots(replicas: int) -> int:
    """Server slots of a backend: twice the declared replicas, rounded up to a multiple of 10.

    A rolling update of the service (start-first, any parallelism up to the whole service) has at
    most 2 x replicas tasks in Docker's DNS answer at once, and every one of them must find a
    slot or new tasks would take no traffic until old ones leave. Unused slots cost nothing: they
    sit in maintenance until DNS gives them an address. Rounding up keeps the L7 config (and so
    the L7 tasks) untouched when a service is scaled within its step: 1 to 5 replicas share 10
    slots. Scaling by hand (`docker service scale`) past the slots is picked up at the next `up`.
    """
    return -(-2 * replicas // SLOT_STEP) * SLOT_STEP


def dns_payload_size(routes: Sequence[Route]) -> int:
    """EDNS payload size announced to Docker's DNS: room for the largest backend's full answer.

    An answer is 12 bytes of header, the question (name + 6), 16 bytes per A record (compressed
    name pointer) and an 11-byte OPT record. The floor is 1232 (the size DNS Flag Day 2020 made
    the safe default); above 8192 HAProxy advises against UDP, so such a backend is refused.
    """
    needed = max((12 + len(r.swarm_service) + 6 + 16 * template_slots(r.replicas) + 11 for r in routes), default=0)
    if needed > 8192:
        raise ValueError(
            f"a backend of {max(r.replicas for r in routes)} replicas needs a DNS answer of {needed} bytes, "
            "more than HAProxy can safely take over UDP (8192)"
        )
    return max(1232, needed)


def pickup_bound_ms(spec: EstateSpec) -> int:
    """Longest time from a new task appearing in Docker's DNS to HAProxy sending it traffic.

    HAProxy re-resolves every server-template name each `timeout resolve`, rendered from the
    model's `l7.dns_hold_valid` (2 s by default). (`hold valid` itself only governs
    `do-resolve` actions since HAProxy 2.x, so it is not what paces backend discovery.) A lost
    query is retried after `timeout retry` (1 s). A slot that DNS fills enters the rotation at once,
    before its first health check, so a new task takes traffic within hold_valid + 1 s: 3 s with
    the defaults. A task that is not listening yet costs nothing: the connection is refused and the
    request is redispatched. At 2 s, one L7 replica asks Docker's DNS about 0.5 queries/s per
    routed service.
    """
    return duration_ms(spec.l7.dns_hold_valid) + duration_ms(RETRY_INTERVAL)


def backend_name(route: Route) -> str:
    return route.swarm_service


def _rate_table(route: Route) -> str:
    return f"{route.swarm_service}.rate"  # '.' never appears in stack or service names


def _host_acl(route: Route) -> str:
    return f"host.{route.swarm_service}"


def _checked(routes: Sequence[Route]) -> list[Route]:
    seen_services: set[str] = set()
    seen_names: dict[str, str] = {}
    for r in routes:
        if r.swarm_service in seen_services:
            raise ValueError(f"service {r.swarm_service} is routed twice")
        seen_services.add(r.swarm_service)
        for name in r.dns_names:
            if name in seen_names:
                raise ValueError(f"{name} is routed to both {seen_names[name]} and {r.swarm_service}")
            seen_names[name] = r.swarm_service
    return sorted(routes, key=lambda r: (r.stack, r.service))


def render_l7_config(spec: EstateSpec, routes: Sequence[Route]) -> str:
    """`haproxy.cfg` for the L7 service, commented like the seed's snippets."""
    ordered = _checked(routes)
    routed = [r for r in ordered if r.dns_names]
    l7 = spec.l7
    tls = bool(l7.certificates) or l7.self_signed
    proxy = " accept-proxy" if spec.l4.enabled else ""
    out: list[str] = [
        f"# L7 HAProxy of the {spec.name} estate ({spec.domain}), generated by swarm-estate: do not edit.",
        f"# {len(routed)} routed service(s); backends are filled from Docker's DNS (dnsrr services).",
        "",
        "global",
        "    log stdout format raw local0 info",
        "    # a stop (SIGUSR1 from the swarm) lets open requests finish, but never for longer than this",
        "    hard-stop-after 10s",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets",
        "    tune.ssl.default-dh-param 2048",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    timeout tunnel 1h",
        "    # a request sent to a replica that just died is retried, on another replica (redispatch);",
        "    # only GET/HEAD are retried once part of the request was sent (see the frontend)",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response",
        "",
        "# Docker's embedded DNS answers `<stack>_<service>` with every running task of a dnsrr service.",
        f"# Each name is re-resolved every {l7.dns_hold_valid}: a new task is in rotation within "
        f"{pickup_bound_ms(spec) / 1000:g}s (one lost query included);",
        "# a failing lookup keeps the last good answer for a few seconds instead of emptying the backend.",
        "resolvers docker",
        f"    nameserver dns1 {DOCKER_DNS}",
        "    resolve_retries 3",
        f"    timeout resolve {l7.dns_hold_valid}",
        f"    timeout retry {RETRY_INTERVAL}",
        f"    hold valid {l7.dns_hold_valid}",
        "    hold nx 5s",
        "    hold other 10s",
        "    hold refused 10s",
        "    hold timeout 10s",
        "    hold obsolete 0s",
        f"    accepted_payload_size {dns_payload_size(routed)}",
        "",
        "frontend http",
        f"    bind :{l7.http_port}{proxy}",
    ]
    if tls:
        out.append(f"    bind :{l7.https_port} ssl crt {CERT_DIR}/ alpn h2,http/1.1{proxy}")
    else:
        out.append("    # no certificate in the model (l7.certificates / l7.self_signed): plain HTTP only")
    out += [
        "    mode http",
        "    option http-keep-alive",
        "    option forwardfor",
        "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
        "    http-request disable-l7-retry if !METH_GET",
    ]
    if tls:
        out += [
            f"    # HSTS ({l7.hsts_max_age} seconds)",
            f'    http-response set-header Strict-Transport-Security "max-age={l7.hsts_max_age}" if {{ ssl_fc }}',
        ]
    for r in routed:
        out.append(f"    # {r.stack}/{r.service}")
        out += [f"    acl {_host_acl(r)} req.hdr(host),field(1,:) -m str -i {name}" for name in r.dns_names]
    if tls:
        plain = [name for r in routed if not r.routing.https_redirect for name in r.dns_names]
        if plain:
            out.append("    # services that opted out of the redirect (routing.https_redirect: false)")
            out += [f"    acl plain_http_ok req.hdr(host),field(1,:) -m str -i {name}" for name in plain]
            out.append("    redirect scheme https code 301 if !{ ssl_fc } !plain_http_ok")
        else:
            out.append("    redirect scheme https code 301 if !{ ssl_fc }")
    out += [f"    use_backend {backend_name(r)} if {_host_acl(r)}" for r in routed]
    out += [f"    default_backend {UNKNOWN_HOST_BACKEND}", ""]

    for r in routed:
        out += _backend(spec, r)
    out += [
        f"backend {UNKNOWN_HOST_BACKEND}",
        "    # a Host no service claims gets a plain 404, never some other service's page",
        '    http-request return status 404 content-type text/plain string "no service is published under this name"',
        "",
    ]
    if l7.stats.enabled:
        out += [
            "# operators: Prometheus metrics and a liveness URI"
            + (" (published on the L7 nodes)" if l7.stats.publish else " (inside haproxy-public only)"),
            "frontend stats",
            f"    bind :{l7.stats.port}",
            "    mode http",
            "    http-request set-log-level silent",
            f"    monitor-uri {l7.stats.monitor_uri}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "",
        ]
    return "\n".join(out) + "\n"


def _backend(spec: EstateSpec, r: Route) -> list[str]:
    routing = r.routing
    check = spec.l7.check
    name = backend_name(r)
    out = [
        # no replica count here: scaling a service within its slots must leave the config (and the L7) alone
        f"# {r.stack}/{r.service}: {', '.join(r.dns_names)} -> {r.swarm_service}:{r.port}, "
        f"{template_slots(r.replicas)} server slots",
        f"backend {name}",
        "    mode http",
        f"    balance {routing.balance}",
    ]
    if routing.check_uri:
        out += [
            "    option httpchk",
            f"    http-check send meth {routing.check_method} uri {routing.check_uri} ver HTTP/1.1 "
            f"hdr Host {r.dns_names[0]}",
            "    http-check expect rstatus (2|3)[0-9][0-9]",
        ]
    else:
        out.append("    # no check_uri: the check only opens a TCP connection")
    if routing.sticky == "cookie":
        # The application's own session cookie (e.g. JSESSIONID) is prefixed with the server's
        # cookie; with the default name HAProxy inserts a cookie of its own.
        mode = "insert indirect" if routing.cookie_name == "SERVERID" else "prefix"
        out += [
            f"    dynamic-cookie-key {spec.name}-{name}",
            f"    cookie {routing.cookie_name} {mode} nocache dynamic",
        ]
    elif routing.sticky == "src":
        out += [
            f"    stick-table type ip size {SRC_STICK_SIZE} expire {SRC_STICK_EXPIRE}",
            "    stick on src",
        ]
    limit = routing.rate_limit or spec.l7.rate_limit
    if limit is not None:
        out += [
            f"    # at most {limit.requests} requests per client address in {limit.period}, then 429",
            f"    http-request track-sc1 src table {_rate_table(r)}",
            f"    http-request deny deny_status 429 if {{ sc_http_req_rate(1,{_rate_table(r)}) gt {limit.requests} }}",
        ]
    out += [
        f"    server-template {r.service}- {template_slots(r.replicas)} {r.swarm_service}:{r.port} check "
        f"inter {check.inter} rise {check.rise} fall {check.fall} "
        "resolvers docker resolve-prefer ipv4 init-addr libc,none",
        "",
    ]
    if limit is not None:
        out += _rate_table_backend(r, limit)
    return out


def _rate_table_backend(r: Route, limit: RateLimit) -> list[str]:
    return [
        f"backend {_rate_table(r)}",
        f"    stick-table type ip size 1m expire {limit.period} store http_req_rate({limit.period})",
        "",
    ]
