"""swarm-estate: the whole Docker Swarm estate, from the stack config `swarm-estate:estate`."""

import traceback
from pathlib import Path

import pulumi
from pulumi.runtime import config as runtime_config

from components.config_secrets import SecretSource
from components.estate import Estate, EstateArgs
from components.model import EstateConfigError
from components.prepare import prepare

config = pulumi.Config()
try:
    # Everything is read and validated here, before the first resource is registered: a bad config or compose
    # file fails `pulumi preview` with its path and rule (an EstateConfigError prints without a traceback), and
    # nothing is half-applied.
    prepared = prepare(
        config.get_object("estate"),
        Path(__file__).absolute().parent,  # not resolved: a project of links keeps its own folder
        pulumi.get_stack(),
        config_keys={*runtime_config.get_config_env(), *runtime_config.CONFIG.get()},
    )
    for warning in prepared.warnings:
        pulumi.log.warn(warning)
    estate = Estate(prepared.spec.name, EstateArgs(prepared=prepared, secrets=SecretSource(config)))
except EstateConfigError:
    raise
except Exception as exc:  # no input may end in a bare traceback: anything else here is swarm-estate's fault
    raise pulumi.RunError(
        f"swarm-estate internal error, a bug (please report it with this text): {type(exc).__name__}: {exc}\n"
        + traceback.format_exc()
    ) from exc

pulumi.export("manager_addresses", estate.manager_addresses)
pulumi.export("l4_virtual_ip", estate.l4_virtual_ip)
pulumi.export("public_urls", estate.public_urls)
pulumi.export("l7_entrypoints", estate.l7_entrypoints)
pulumi.export("l7_https_entrypoints", estate.l7_https_entrypoints)
pulumi.export("health_urls", estate.health_urls)
if prepared.branch is not None:
    pulumi.export("branch", prepared.branch)
