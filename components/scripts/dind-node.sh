#!/bin/sh
# Entrypoint of a docker-substrate node: a Docker engine inside a container.
# Inputs (environment): NODE_PRIVILEGED=true|false, NODE_DOCKERD_ARGS (extra dockerd flags), NODE_API_SOCKET and
# NODE_API_GROUP (the first manager's socket for the machine running the estate, and its group).
# Without --privileged the outer engine leaves /sys, the cgroup hierarchies and some /proc
# paths read-only or masked; the inner dockerd must write them, so open them up first.
set -u
if [ "${NODE_PRIVILEGED:-true}" != "true" ]; then
    mount -o remount,rw /sys 2>/dev/null || true
    if mountpoint -q /sys/fs/cgroup; then
        mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
        for hierarchy in /sys/fs/cgroup/*; do
            [ -d "$hierarchy" ] && mountpoint -q "$hierarchy" || continue
            mount -o remount,rw,bind "$hierarchy" 2>/dev/null || mount -o remount,rw "$hierarchy" 2>/dev/null || true
        done
    fi
    # The provider cannot pass --device-cgroup-rule; a v1 devices cgroup can widen itself
    # up to what its parent allows, which is everything for a container's parent.
    [ -w /sys/fs/cgroup/devices/devices.allow ] && echo 'a *:* rwm' > /sys/fs/cgroup/devices/devices.allow
    # Nor systempaths=unconfined: unmask the /proc files dockerd and runc need.
    for masked in /proc/sys /proc/sysrq-trigger /proc/kcore /proc/keys /proc/timer_list; do
        umount "$masked" 2>/dev/null || true
    done
    mount -o remount,rw /proc/sys 2>/dev/null || true
fi
if [ -x /usr/sbin/sshd ] && [ -d /etc/ssh ]; then
    mkdir -p /run/sshd
    [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
    /usr/sbin/sshd -o PasswordAuthentication=no -o UseDNS=no
fi
# The engine listens on unix sockets only: no TCP port any local process could reach. The first manager also
# listens on NODE_API_SOCKET, in a directory of the machine running the estate that only its user can enter, with
# that user's group (NODE_API_GROUP) on the socket.
set -- dockerd --host=unix:///var/run/docker.sock
if [ -n "${NODE_API_SOCKET:-}" ]; then
    set -- "$@" --host="unix://$NODE_API_SOCKET" --group="${NODE_API_GROUP:-0}"
fi
# shellcheck disable=SC2086  # NODE_DOCKERD_ARGS is a list of flags, split on purpose
set -- "$@" ${NODE_DOCKERD_ARGS:-}
# The official docker:dind image ships `dind`, which prepares nested cgroup v2.
if command -v dind >/dev/null 2>&1; then
    exec dind "$@"
fi
exec "$@"
