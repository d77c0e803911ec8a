"""Secret stack config values, as Pulumi secrets from the first read."""

from __future__ import annotations

import pulumi
from pulumi.runtime.rpc import UNKNOWN as UNKNOWN_SENTINEL

from .model import CONFIG_NAMESPACE


class SecretSource:
    """Reads the secret config keys the model names (`*_secret`, `certificates[].secret`, …).

    The offline synth cannot decrypt `secure:` values; it passes the engine's own unknown
    sentinel instead, which becomes an unknown secret here, exactly what a preview without
    the passphrase would see.
    """

    def __init__(self, config: pulumi.Config | None = None):
        self._config = config or pulumi.Config(CONFIG_NAMESPACE)

    def get(self, key: str) -> pulumi.Output[str]:
        raw = self._config.get(key)
        if raw is None:
            raise pulumi.RunError(
                f"{CONFIG_NAMESPACE}:{key}: the estate names this secret but it is not set; "
                f"run `pulumi config set --secret {key} …`"
            )
        if raw == UNKNOWN_SENTINEL:
            return pulumi.Output.secret(pulumi.UNKNOWN)  # type: ignore[arg-type]
        return pulumi.Output.secret(raw)
