"""L7 layer: the HAProxy swarm service that routes every public name to its stack's service.

The configuration is rendered by `components.render.l7` from the model and the routes; this
module turns it into swarm objects: a content-hashed `docker.ServiceConfig`, one content-hashed
`docker.Secret` per certificate, and the `docker.Service` running HAProxy on the labelled nodes
with its ports published in host mode (the L4 pair targets those nodes directly).
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from .compose.spec import STACK_LABEL, content_digest, content_name, swarm_secret_prefix
from .config_secrets import SecretSource
from .model import EstateSpec, Route
from .model.proxy import SELF_SIGNED_NAME
from .render.l7 import CERT_DIR, CONFIG_PATH, render_l7_config
from .units import duration_ms, parse_duration, service_duration

__all__ = ["L7", "L7Args", "healthcheck_command", "render_l7_config", "self_signed_command"]

STACK = "l7"  # `docker stack` naming: the service is `l7_haproxy`, its objects carry the stack label
SERVICE_NAME = f"{STACK}_haproxy"
SELF_SIGNED = SELF_SIGNED_NAME


@dataclass(frozen=True)
class L7Args:
    spec: EstateSpec
    routes: Sequence[Route]
    provider: docker.Provider
    network: docker.Network  # the haproxy-public overlay
    secrets: SecretSource


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def self_signed_command(domain: str) -> str:
    """Shell command printing a self-signed certificate + key (one PEM bundle) for `domain` and `*.domain`.

    Run once, on create, by a `command.local.Command`: the bundle lives in the Pulumi state (as a
    secret) and stays the same across `pulumi up`s until the domain changes.
    """
    subject = shlex.quote(f"/CN={domain}")
    san = shlex.quote(f"subjectAltName=DNS:{domain},DNS:*.{domain}")
    return (
        "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && "
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj {subject} -addext {san} "
        '-keyout "$d/key.pem" -out "$d/crt.pem" 2>/dev/null && cat "$d/crt.pem" "$d/key.pem"'
    )


def converge_timeout_s(spec: EstateSpec) -> int:
    """How long `up` waits for every L7 task to run: each node in turn gets its update delay, a minute to start,
    and its container check's worst case to turn healthy (a task is not running before its first passing check)."""
    l7, check = spec.l7, spec.l7.container_check
    healthy_s = (
        parse_duration(check.start_period) + (check.retries + 1) * parse_duration(check.interval)
        + parse_duration(check.timeout)
    ) // 10**9
    return max(180, l7.replicas * (duration_ms(l7.update_delay) // 1000 + 60 + healthy_s))


def healthcheck_command(spec: EstateSpec) -> list[str]:
    """Container healthcheck: the monitor URI answers 200 (or, without the stats frontend, the HTTP port accepts).

    Uses what the image has: busybox `wget` in Alpine-based images, bash's /dev/tcp in the
    Debian-based official ones.
    """
    stats = spec.l7.stats
    if stats.enabled:
        port, uri = stats.port, stats.monitor_uri
        tool, fetch = "wget", f"wget -q -O /dev/null http://127.0.0.1:{port}{uri}"
        probe = (
            f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf "GET {uri} HTTP/1.0\\r\\n\\r\\n" >&3 '
            '&& head -n 1 <&3 | grep -q " 200 "'
        )
    else:
        port = spec.l7.http_port
        tool, fetch = "nc", f"nc -z 127.0.0.1 {port}"
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
    return ["CMD-SHELL", f"if command -v {tool} >/dev/null 2>&1; then {fetch}; else bash -c {shlex.quote(probe)}; fi"]


class L7(pulumi.ComponentResource):
    """`swarm-estate:proxy:L7`: the L7 HAProxy service with its config and certificates."""

    config_name: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(self, name: str, args: L7Args, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:proxy:L7", name, None, opts)
        spec, l7 = args.spec, args.spec.l7
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)

        self.config_text = render_l7_config(spec, args.routes)
        self.files = {"l7/haproxy.cfg": self.config_text}
        config = docker.ServiceConfig(
            f"{name}-config-{content_digest(self.config_text)}",
            name=content_name(STACK, "haproxy.cfg", self.config_text),
            data=_b64(self.config_text),
            labels=[docker.ServiceConfigLabelArgs(label=STACK_LABEL, value=STACK)],
            opts=child,
        )

        bundles: list[tuple[str, pulumi.Output[str]]] = [(c.name, args.secrets.get(c.secret)) for c in l7.certificates]
        if l7.self_signed:
            generated = command.local.Command(
                f"{name}-self-signed",
                create=self_signed_command(spec.domain),
                logging=command.local.Logging.NONE,
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout"]),
            )
            bundles.append((SELF_SIGNED, pulumi.Output.secret(generated.stdout)))

        secret_refs = []
        for file, pem in bundles:
            secret = docker.Secret(
                swarm_secret_prefix(STACK, file),
                data=pem.apply(_b64),
                labels=[docker.SecretLabelArgs(label=STACK_LABEL, value=STACK)],
                opts=child,
            )
            secret_refs.append(
                docker.ServiceTaskSpecContainerSpecSecretArgs(
                    secret_id=secret.id, secret_name=secret.name, file_name=f"{CERT_DIR}/{file}.pem"
                )
            )

        ports = [(held.port, held.l7) for held in spec.host_ports() if held.l7]
        ((label_key, label_value),) = l7.node_label.items()
        delay = service_duration(parse_duration(l7.update_delay, days=True))
        check = l7.container_check

        service = docker.Service(
            f"{name}-service",
            name=SERVICE_NAME,
            labels=[docker.ServiceLabelArgs(label=STACK_LABEL, value=STACK)],
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=l7.image,
                    configs=[
                        docker.ServiceTaskSpecContainerSpecConfigArgs(
                            config_id=config.id, config_name=config.name, file_name=CONFIG_PATH
                        )
                    ],
                    secrets=secret_refs,
                    # the official image runs HAProxy unprivileged; let it bind 80/443 itself
                    sysctl={"net.ipv4.ip_unprivileged_port_start": "0"},
                    # SIGUSR1 is HAProxy's soft stop: stop listening, finish open requests
                    # (at most `hard-stop-after` 10s, see the config)
                    stop_signal="SIGUSR1",
                    stop_grace_period="15s",
                    healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
                        tests=healthcheck_command(spec),
                        interval=service_duration(parse_duration(check.interval)),
                        timeout=service_duration(parse_duration(check.timeout)),
                        retries=check.retries,
                        start_period=service_duration(parse_duration(check.start_period)),
                    ),
                ),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=args.network.id)],
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=[f"node.labels.{label_key}=={label_value}"], max_replicas=1
                ),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s", window="30s"),
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=l7.replicas)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                ports=[
                    docker.ServiceEndpointSpecPortArgs(
                        name=port_name, target_port=port, published_port=port, protocol="tcp", publish_mode="host"
                    )
                    for port, port_name in ports
                ]
            ),
            # start-first cannot work: the new task would collide with the old one on the host
            # ports of the same node. So stop-first, one node at a time; the L4 pair routes
            # around the node being updated, and `delay` gives it time to see the node back.
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, delay=delay, order="stop-first", failure_action="rollback", monitor="10s"
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(
                parallelism=1, delay=delay, order="stop-first", failure_action="pause", monitor="10s"
            ),
            converge_config=docker.ServiceConvergeConfigArgs(delay="2s", timeout=f"{converge_timeout_s(spec)}s"),
            opts=child,
        )

        self.config_name = config.name
        self.service_name = service.name
        self.register_outputs({"config_name": self.config_name, "service_name": self.service_name})
