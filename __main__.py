"""swarm-estate: the whole Docker Swarm estate, from the stack config `swarm-estate:estate`."""

from pathlib import Path

import pulumi

from components.config_secrets import SecretSource
from components.estate import Estate, EstateArgs
from components.prepare import prepare

config = pulumi.Config()
# Everything is read and validated here, before the first resource is registered: a bad
# config or compose file fails `pulumi preview` with its path and rule; nothing is half-applied.
prepared = prepare(config.require_object("estate"), Path(__file__).resolve().parent, pulumi.get_stack())
for warning in prepared.warnings:
    pulumi.log.warn(warning)

estate = Estate(prepared.spec.name, EstateArgs(prepared=prepared, secrets=SecretSource(config)))

pulumi.export("manager_addresses", estate.manager_addresses)
pulumi.export("l4_virtual_ip", estate.l4_virtual_ip)
pulumi.export("public_urls", estate.public_urls)
pulumi.export("l7_entrypoints", estate.l7_entrypoints)
pulumi.export("l7_https_entrypoints", estate.l7_https_entrypoints)
pulumi.export("health_urls", estate.health_urls)
if prepared.branch is not None:
    pulumi.export("branch", prepared.branch)
