#!/bin/sh
# Initialise the swarm on the first manager, or report the swarm it already manages.
# In:  ADVERTISE_ADDR; optional DEFAULT_ADDR_POOL (space-separated CIDRs),
#      DEFAULT_ADDR_POOL_MASK_LENGTH, DATA_PATH_PORT.
# Out: cluster_id=, node_id=, manager_token=, worker_token= lines on stdout (the caller keeps them secret).
set -eu
: "${ADVERTISE_ADDR:?ADVERTISE_ADDR is required}"
fail() { echo "swarm-init on $(hostname): $*" >&2; exit 1; }

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fail "cannot reach the local Docker engine"
case "$state" in
inactive)
    set -- --advertise-addr "$ADVERTISE_ADDR"
    for pool in ${DEFAULT_ADDR_POOL:-}; do set -- "$@" --default-addr-pool "$pool"; done
    [ -z "${DEFAULT_ADDR_POOL_MASK_LENGTH:-}" ] || set -- "$@" --default-addr-pool-mask-length "$DEFAULT_ADDR_POOL_MASK_LENGTH"
    [ -z "${DATA_PATH_PORT:-}" ] || [ "$DATA_PATH_PORT" = 4789 ] || set -- "$@" --data-path-port "$DATA_PATH_PORT"
    docker swarm init "$@" >/dev/null || fail "docker swarm init $* failed"
    echo "initialised a new swarm advertised on $ADVERTISE_ADDR" >&2
    ;;
active)
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
        fail "this node is a worker of a swarm managed by $(docker info --format '{{range .Swarm.RemoteManagers}}{{.Addr}} {{end}}');" \
            "it cannot initialise one: make it leave that swarm (docker swarm leave) first"
    echo "already a manager of swarm $(docker info --format '{{.Swarm.Cluster.ID}}'); nothing to do" >&2
    ;;
locked) fail "the swarm on this node is locked: unlock it (docker swarm unlock) first" ;;
*) fail "the node's swarm state is '$state'; expected inactive or active" ;;
esac

echo "cluster_id=$(docker info --format '{{.Swarm.Cluster.ID}}')"
echo "node_id=$(docker info --format '{{.Swarm.NodeID}}')"
echo "manager_token=$(docker swarm join-token -q manager)"
echo "worker_token=$(docker swarm join-token -q worker)"
