#!/bin/sh
# Install a host's secret files, which reach it apart from its (readable) bootstrap, and reload the units
# that read them when one changed. Idempotent: an unchanged file is not rewritten and reloads nothing.
# In:  stdin: one "path mode base64-content" line per file; arguments: the units to reload on a change.
# Out: what changed, on stderr (never a file's content).
set -eu
changed=""
while read -r path mode data; do
    [ -n "$path" ] || continue
    dir=$(dirname "$path")
    mkdir -p "$dir"
    tmp=$(mktemp "$dir/.secret-files.XXXXXX")
    chmod "$mode" "$tmp"
    printf '%s' "$data" | base64 -d >"$tmp"
    if cmp -s "$tmp" "$path" && [ "$(stat -c %a "$path")" = "${mode#0}" ]; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$path"
        echo "secret-files: wrote $path" >&2
        changed=1
    fi
done
[ -n "$changed" ] || { echo "secret-files: nothing changed" >&2; exit 0; }
for unit in "$@"; do
    if systemctl is-active --quiet "$unit"; then
        systemctl reload-or-restart "$unit"
        echo "secret-files: reloaded $unit" >&2
    fi
done
