#!/bin/sh
# Last step of removing a node, from a remaining manager: once the node has left (it shows as
# down), delete its entry from the node list.
# In:  NODE_ADDR (the node's address), NODE_NAME (its hostname), LEAVE_TIMEOUT (seconds to wait
#      for it to show down, default 60). An entry matches on either: a host name the estate does
#      not control (existing hosts) must not leave a stale entry behind. DISSOLVE=true: a swarm already
#      dissolved by its last manager (a whole-estate destroy) has nothing left to remove.
set -eu
: "${NODE_ADDR:?NODE_ADDR is required}" "${NODE_NAME:?NODE_NAME is required}"
LEAVE_TIMEOUT=${LEAVE_TIMEOUT:-60}
fail() { echo "swarm-node-rm $NODE_NAME ($NODE_ADDR): $*" >&2; exit 1; }

if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]; then
    if [ "${DISSOLVE:-false}" = true ] && [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ]; then
        echo "the swarm is dissolved: no node list to remove $NODE_NAME from" >&2
        exit 0
    fi
    fail "$(hostname) is not a swarm manager; node entries can only be removed on a manager"
fi
entries() {
    # shellcheck disable=SC2046 # one node id per word
    docker node inspect --format '{{.ID}} {{.Status.Addr}} {{.Description.Hostname}} {{.Status.State}}' \
        $(docker node ls -q) | awk -v a="$NODE_ADDR" -v n="$NODE_NAME" '$2 == a || $3 == n'
}
waited=0
while entries | grep -qv ' down$'; do
    [ "$waited" -lt "$LEAVE_TIMEOUT" ] ||
        fail "still $(entries | awk '{print $4}' | sort -u | tr '\n' ' ')after ${LEAVE_TIMEOUT}s: it has not left the swarm"
    sleep 1
    waited=$((waited + 1))
done
ids=$(entries | awk '{print $1}')
if [ -z "$ids" ]; then
    echo "not in the node list; nothing to remove" >&2
    exit 0
fi
# shellcheck disable=SC2086 # one node id per word
docker node rm $ids >/dev/null || fail "docker node rm failed"
echo "removed from the node list" >&2
