#!/bin/bash
# Converge one host into a swarm-ready Docker host: the same steps cloud-init performs on a VM
# (files, packages, fstab mounts, firewall, engine, ready marker). Runs as root, any number of
# times: every step checks the host first and acts only on a difference, so a second run changes
# nothing and restarts nothing.
#
# In (environment, rendered by components/cloudinit.py):
#   SE_HOSTNAME    host name (also the swarm node name)
#   SE_USER        ops user; added to the docker group when SE_DOCKER_USER=1
#   SE_PACKAGES    space-separated packages that must be installed
#   SE_OFFLINE     1: no package mirror answers (base_image.offline): a missing package is an error, not an install
#   SE_FILES       one "path mode base64-content" line per file
#   SE_FSTAB       fstab lines of the NFS mounts
#   SE_SERVICES    "unit=watched-path,watched-path" words: enabled, running, restarted when a
#                  file under a watched path changed in this run
#   SE_RELOAD      units reloaded (gracefully) instead of restarted after such a change
#   SE_DIGEST      content hash of the whole profile, written into the ready marker
#   SE_MARKER      ready marker path the swarm layer waits for
#   SE_WAIT_SECONDS (optional) first wait this long for cloud-init to write the marker (VMs)
#   SE_ROOT        (tests only) prefix of every path this script writes
# Out: one "changed: …" line on stdout ("changed: nothing" on a converged host).
set -euo pipefail

main() {
    local root=${SE_ROOT:-}
    local -a changed=()
    log() { echo "bootstrap ${SE_HOSTNAME}: $*" >&2; }
    installed() {
        if command -v dpkg-query >/dev/null; then
            [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
        else
            rpm -q "$1" >/dev/null 2>&1
        fi
    }
    local -a missing=()
    local pkg
    for pkg in ${SE_PACKAGES:-}; do
        installed "$pkg" || missing+=("$pkg")
    done

    # --- an offline site installs nothing: a package the image lacks fails the host before anything changes
    if [ "${#missing[@]}" -gt 0 ] && [ -n "${SE_OFFLINE:-}" ]; then
        log "the image lacks ${missing[*]} and this site installs nothing (base_image.offline): add them to the image"
        exit 1
    fi

    # --- VMs: cloud-init does the first bootstrap; wait for it rather than racing it ---------
    if [ -n "${SE_WAIT_SECONDS:-}" ]; then
        local waited=0
        until [ -f "$root$SE_MARKER" ]; do
            if [ "$waited" -ge "$SE_WAIT_SECONDS" ]; then
                log "cloud-init did not write $SE_MARKER within ${SE_WAIT_SECONDS}s (see /var/log/cloud-init-output.log)"
                exit 1
            fi
            # cloud-init has finished without the marker: a step failed, and waiting on will not help.
            if [ -z "$root" ] && command -v cloud-init >/dev/null; then
                case "$(cloud-init status 2>/dev/null || true)" in
                *"status: done"* | *"status: error"*)
                    if [ ! -f "$SE_MARKER" ]; then
                        log "cloud-init finished but the host is not ready (see /var/log/cloud-init-output.log)"
                        exit 1
                    fi
                    ;;
                esac
            fi
            sleep 5
            waited=$((waited + 5))
        done
    fi

    # --- host name ------------------------------------------------------------------------------
    if [ -z "$root" ] && [ "$(hostname)" != "$SE_HOSTNAME" ]; then
        hostnamectl set-hostname "$SE_HOSTNAME"
        changed+=("hostname")
    fi

    # --- files first: daemon.json and the package repository must exist before the install -----
    local path mode b64 target tmp
    while IFS=' ' read -r path mode b64; do
        [ -n "$path" ] || continue
        target="$root$path"
        tmp=$(mktemp)
        printf '%s' "$b64" | base64 -d >"$tmp"
        if [ -f "$target" ] && cmp -s "$tmp" "$target" && [ "$(stat -c %a "$target")" = "${mode#0}" ]; then
            rm -f "$tmp"
            continue
        fi
        mkdir -p "$(dirname "$target")"
        # The host's own version (an existing host's daemon.json…) is kept once, for a way back.
        if [ -f "$target" ] && [ ! -e "$target.before-swarm-estate" ]; then
            cp -p "$target" "$target.before-swarm-estate"
        fi
        install -m "$mode" "$tmp" "$target"
        rm -f "$tmp"
        changed+=("$path")
    done <<<"${SE_FILES:-}"

    # --- packages (checked above, before cloud-init may have installed them: look again) --------------
    missing=()
    for pkg in ${SE_PACKAGES:-}; do
        installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        if command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold \
                "${missing[@]}" >&2
        elif command -v dnf >/dev/null; then
            dnf install -y -q "${missing[@]}" >&2
        else
            yum install -y -q "${missing[@]}" >&2
        fi
        changed+=("packages:${missing[*]}")
    fi

    # --- NFS mounts: fstab holds exactly the model's line for each mount point ----------------------
    local fstab="$root/etc/fstab" dev mnt fstype opts line
    [ -f "$fstab" ] || { mkdir -p "$(dirname "$fstab")"; touch "$fstab"; }
    while read -r dev mnt fstype opts _; do
        [ -n "$dev" ] || continue
        line="$dev $mnt $fstype $opts 0 0"
        if ! grep -qxF "$line" "$fstab"; then
            tmp=$(mktemp)
            awk -v m="$mnt" '$2 != m' "$fstab" >"$tmp"
            echo "$line" >>"$tmp"
            cat "$tmp" >"$fstab"
            rm -f "$tmp"
            changed+=("fstab:$mnt")
        fi
        mkdir -p "$root$mnt"
        # A mount that is already up keeps running (containers use it); new options apply on remount.
        if ! mountpoint -q "$root$mnt"; then
            mount "$root$mnt"
            changed+=("mount:$mnt")
        fi
    done <<<"${SE_FSTAB:-}"

    # --- services: enabled, running, restarted when their configuration changed -----------------
    local word unit watched w c restart
    for c in ${changed[@]+"${changed[@]}"}; do
        case "$c" in /etc/systemd/system/*) systemctl daemon-reload; break ;; esac
    done
    for word in ${SE_SERVICES:-}; do
        unit=${word%%=*}
        watched=${word#*=}
        [ "$watched" != "$word" ] || watched=""
        systemctl is-enabled --quiet "$unit" 2>/dev/null || { systemctl enable --quiet "$unit"; changed+=("enable:$unit"); }
        restart=""
        for w in ${watched//,/ }; do
            for c in ${changed[@]+"${changed[@]}"}; do
                case "$c" in "$w"*) restart=1 ;; esac
            done
        done
        if ! systemctl is-active --quiet "$unit"; then
            systemctl restart "$unit"
            changed+=("start:$unit")
        elif [ -n "$restart" ]; then
            case " ${SE_RELOAD:-} " in
            *" $unit "*) systemctl reload-or-restart "$unit"; changed+=("reload:$unit") ;;
            *) systemctl restart "$unit"; changed+=("restart:$unit") ;;
            esac
        fi
    done

    if [ "${SE_DOCKER_USER:-}" = 1 ]; then
        case " $(id -nG "$SE_USER") " in
        *" docker "*) ;;
        *) usermod -aG docker "$SE_USER"; changed+=("group:docker+$SE_USER") ;;
        esac
    fi

    # --- ready marker: the swarm layer joins only hosts that carry it ------------------------------
    local marker="$root$SE_MARKER"
    if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$SE_DIGEST" ]; then
        mkdir -p "$(dirname "$marker")"
        echo "$SE_DIGEST" >"$marker"
    fi

    if [ "${#changed[@]}" -eq 0 ]; then
        echo "changed: nothing"
    else
        echo "changed: ${changed[*]}"
    fi
}

# The whole script is parsed before it runs and reads nothing from stdin: it may itself arrive on
# stdin (`sudo bash -s`), and a command reading stdin must not swallow the rest of it.
main "$@" </dev/null
