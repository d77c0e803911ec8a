"""Compose import: each stack's compose file + its stack config -> an ImportedStack, before any resource exists.

interpolate.py   ${VAR} substitution as Compose does it
parse.py         the file -> ComposeFile (services, networks, volumes, configs, secrets), problems by key
service.py       one service's keys -> ServiceSpec
values.py        the value forms Compose accepts (durations, sizes, ports, mounts, restart/update policies)
spec.py          the dataclasses all of it produces
apply.py         the stack config applied: routing, NFS volumes, secret keys, shared overlays; import_stacks()
"""
