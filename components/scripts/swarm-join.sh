#!/bin/sh
# Join this node to the estate's swarm, or confirm it is already a member.
# In:  the join token on the first line of stdin (or JOIN_TOKEN: stdin keeps it off command lines),
#      MANAGER_ADDR (the manager to join through), ADVERTISE_ADDR,
#      MANAGER_ADDRS (space-separated addresses of all the estate's managers), optional CLUSTER_ID.
# Out: node_id= on stdout.
set -eu
if [ -z "${JOIN_TOKEN:-}" ]; then
    IFS= read -r JOIN_TOKEN || true
fi
: "${JOIN_TOKEN:?the join token is required on stdin}" "${MANAGER_ADDR:?MANAGER_ADDR is required}"
: "${ADVERTISE_ADDR:?ADVERTISE_ADDR is required}"
MANAGER_ADDRS=${MANAGER_ADDRS:-$MANAGER_ADDR}
fail() { echo "swarm-join on $(hostname): $*" >&2; exit 1; }

in_estate_swarm() {
    # A manager knows its cluster id; a worker only knows the managers it talks to.
    if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] && [ -n "${CLUSTER_ID:-}" ]; then
        [ "$(docker info --format '{{.Swarm.Cluster.ID}}')" = "$CLUSTER_ID" ]
        return
    fi
    for remote in $(docker info --format '{{range .Swarm.RemoteManagers}}{{.Addr}} {{end}}'); do
        for addr in $MANAGER_ADDRS; do
            [ "${remote%:*}" = "$addr" ] && return 0
        done
    done
    return 1
}

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fail "cannot reach the local Docker engine"
case "$state" in
inactive)
    # Managers joining at the same moment can time out while Raft adds the previous one: retry
    # a few times (bounded), unless the node made it in after all.
    attempt=1
    until docker swarm join --token "$JOIN_TOKEN" --advertise-addr "$ADVERTISE_ADDR" "$MANAGER_ADDR:2377" >/dev/null; do
        [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ] || break
        [ "$attempt" -lt "${JOIN_ATTEMPTS:-3}" ] || fail "docker swarm join through $MANAGER_ADDR:2377 failed $attempt times"
        sleep $((attempt * 2))
        attempt=$((attempt + 1))
    done
    echo "joined the swarm through $MANAGER_ADDR" >&2
    ;;
active)
    in_estate_swarm ||
        fail "this node already belongs to another swarm (its managers:" \
            "$(docker info --format '{{range .Swarm.RemoteManagers}}{{.Addr}} {{end}}')), not the estate's" \
            "(managers: $MANAGER_ADDRS); make it leave that swarm (docker swarm leave) or remove it from the estate"
    echo "already a member of the estate's swarm; nothing to do" >&2
    ;;
locked) fail "the swarm on this node is locked: unlock it (docker swarm unlock) first" ;;
*) fail "the node's swarm state is '$state'; expected inactive or active" ;;
esac
echo "node_id=$(docker info --format '{{.Swarm.NodeID}}')"
