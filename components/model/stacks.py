"""Model of the application stacks, their routing through L7, and the platform stacks."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from .base import DnsName, Name, Port, SecretRef, Strict
from .proxy import RateLimit

Sticky = Literal["none", "cookie", "src"]


class TcpRoute(Strict):
    """One port of a service served as plain TCP by the L7 (and the L4 pair when it is on): an SSH port of a git
    server, a database for another site, an agent tunnel."""

    identity: ClassVar[str] = "port"  # one frontend per service port

    port: Port = Field(description="port the service listens on")
    published: Port = Field(description="port the L7 publishes on every L7 node (and the L4 pair on its address)")


class Routing(Strict):
    """The seed's service ticket: public names, replicas, stickiness, health URI, HTTP port, TCP ports."""

    dns_names: list[DnsName] = Field(default_factory=list, description="public host names routed to the service")
    http_port: Port | None = Field(
        default=None, description="port the service listens on (default: from the compose file)"
    )
    replicas: PositiveInt | None = Field(default=None, description="replicas (overrides the compose file)")
    sticky: Sticky = Field(default="none", description="session stickiness: cookie, src (client address) or none")
    cookie_name: str = Field(
        default="SERVERID", pattern=r"^[A-Za-z0-9_-]+$", description="cookie used when sticky=cookie"
    )
    check_uri: str | None = Field(
        default=None, pattern=r"^/", description="health URI (required with several replicas)"
    )
    check_method: Literal["HEAD", "GET"] = Field(default="HEAD", description="HTTP method of the health check")
    balance: Literal["leastconn", "roundrobin", "source"] = Field(default="leastconn", description="L7 balancing")
    rate_limit: RateLimit | None = Field(default=None, description="per-client request limit (default: the L7 default)")
    https_redirect: bool = Field(default=True, description="redirect plain HTTP to HTTPS")
    tcp: list[TcpRoute] = Field(
        default_factory=list, description="ports served as TCP through the L7 (mode tcp), one frontend each"
    )
    allow: list[IPv4Network] = Field(
        default_factory=list,
        description="client networks (CIDRs) allowed; empty: every client. Checked on the client's own address "
        "(behind the L4 pair: the one its PROXY header carries)",
    )
    allow_only_writes: bool = Field(
        default=False, description="the allowlist holds only for requests other than GET and HEAD (a push side)"
    )

    @property
    def routed(self) -> bool:
        """Served by the L7 (by name, or on a TCP port): the service goes dnsrr on the public network."""
        return bool(self.dns_names or self.tcp)


class StackVolume(Strict):
    nfs: Name = Field(description="NFS export the named volume lives on")
    subpath: str = Field(default="", description="directory below the export")
    keep_on_removal: bool = Field(default=True, description="never delete the data when the stack is removed")


class StackSpec(Strict):
    compose: str = Field(description="compose file, relative to the project (e.g. stacks/conductor/docker-compose.yml)")
    variables: dict[str, str] = Field(default_factory=dict, description="values for ${VAR} in the compose file")
    secrets: dict[str, SecretRef] = Field(
        default_factory=dict, description="compose secret name -> secret config key that holds its content"
    )
    volumes: dict[str, StackVolume] = Field(default_factory=dict, description="named volumes backed by NFS")
    services: dict[Name, Routing] = Field(default_factory=dict, description="per-service routing and overrides")


class RegistrySpec(Strict):
    enabled: bool = Field(default=False, description="run the private image registry as a platform stack")
    dns_name: DnsName | None = Field(default=None, description="public name of the registry behind L7")
    image: str = Field(default="registry:2", description="registry image")
    nfs: Name | None = Field(default=None, description="NFS export holding the registry data")
    subpath: str = Field(default="registry", description="directory below the export")
    htpasswd_secret: SecretRef | None = Field(default=None, description="secret config key with the htpasswd file")
    ca_certificate: str | None = Field(default=None, description="PEM of the CA that signed the registry certificate")
    insecure: bool = Field(default=False, description="trust it as insecure-registries (only if you really must)")
    public: bool = Field(
        default=False, description="accept pushes from every client (default: only from l7.operator_networks)"
    )

    @model_validator(mode="after")
    def _complete(self) -> RegistrySpec:
        if self.enabled:
            missing = [n for n in ("dns_name", "nfs", "htpasswd_secret") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"an enabled registry needs {', '.join(missing)}")
        return self


class PortainerSpec(Strict):
    enabled: bool = Field(default=False, description="run Portainer (agent on every node, server on a manager)")
    dns_name: DnsName | None = Field(default=None, description="public name of the Portainer UI behind L7")
    image: str = Field(default="portainer/portainer-ce:2.21.4", description="server image")
    agent_image: str = Field(default="portainer/agent:2.21.4", description="agent image")
    nfs: Name | None = Field(default=None, description="NFS export holding Portainer's data")
    public: bool = Field(
        default=False, description="serve the UI to every client (default: only to l7.operator_networks)"
    )

    @model_validator(mode="after")
    def _complete(self) -> PortainerSpec:
        if self.enabled and self.dns_name is None:
            raise ValueError("an enabled Portainer needs dns_name")
        return self
