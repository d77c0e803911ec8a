"""A Python stand-in for Pulumi's Go language host plugin ``pulumi-language-python``.

The Pulumi engine launches ``pulumi-language-python`` as a plugin process, reads the gRPC port it prints, and then
drives it through the ``pulumirpc.LanguageRuntime`` service.  This package implements that service (for the ``pip``
toolchain) and runs programs through the official ``pulumi-language-python-exec`` executor script, exactly as the
Go host does.  See README.md next to ``src/`` for what differs from the real host.
"""
