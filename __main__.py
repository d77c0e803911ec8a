"""swarm-estate: the whole Docker Swarm estate, from the stack config `swarm-estate:estate`."""

import pulumi

from components.estate import Estate, EstateArgs
from components.model import format_violation, load_estate
from components.secrets import SecretSource

config = pulumi.Config()
# Everything is validated here, before the first resource is registered: a bad config
# fails `pulumi preview` with the config path and the rule, and nothing is half-applied.
spec = load_estate(config.require_object("estate"))
for warning in spec.warnings:
    pulumi.log.warn(format_violation(warning))

estate = Estate(spec.name, EstateArgs(spec=spec, secrets=SecretSource(config)))

pulumi.export("manager_addresses", estate.manager_addresses)
pulumi.export("l4_virtual_ip", estate.l4_virtual_ip)
pulumi.export("public_urls", estate.public_urls)
pulumi.export("l7_entrypoints", estate.l7_entrypoints)
