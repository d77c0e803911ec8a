#!/bin/sh
# PID 2 of a docker-in-docker swarm node (tini is PID 1 and reaps orphans).
# The outer engine mounts /sys and the cgroup v1 hierarchies read-only even with the wide
# capability set; the inner dockerd must create cgroups, so remount them read-write first.
set -u
mount -o remount,rw /sys 2>/dev/null || true
if mountpoint -q /sys/fs/cgroup; then
    mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
    for hierarchy in /sys/fs/cgroup/*; do
        mountpoint -q "$hierarchy" || continue
        mount -o remount,rw,bind "$hierarchy" 2>/dev/null || mount -o remount,rw "$hierarchy" 2>/dev/null || true
    done
fi
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
if [ -n "${NODE_AUTHORIZED_KEY:-}" ]; then
    printf '%s\n' "$NODE_AUTHORIZED_KEY" > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
fi
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
/usr/sbin/sshd -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o UseDNS=no
# The engine also listens on TCP inside the node's private bridge so a harness can publish it
# on 127.0.0.1 (the docker substrate's provider endpoint); nothing else can reach that bridge.
# shellcheck disable=SC2086 # extra dockerd flags, one per word
exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 --tls=false \
    ${NODE_DOCKERD_ARGS:-} >/var/log/dockerd.log 2>&1
