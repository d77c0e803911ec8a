#!/bin/sh
# First step of removing a node, from a manager: check quorum, drain, wait until its tasks
# have moved, demote it if it is a manager. The node leaves and is removed afterwards.
# In:  NODE (node id or hostname), DRAIN_TIMEOUT (seconds to wait for tasks to move, default 120),
#      DISSOLVE (true: the last manager may go, the swarm with it; default false).
set -eu
: "${NODE:?NODE is required}"
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
fail() { echo "swarm-node-drain $NODE: $*" >&2; exit 1; }

if ! docker node inspect "$NODE" >/dev/null 2>&1; then
    echo "$NODE is not in the swarm; nothing to drain" >&2
    exit 0
fi
role=$(docker node inspect --format '{{.Spec.Role}}' "$NODE")

if [ "$role" = manager ]; then
    # Check before draining so a refused removal leaves the node as it was.
    managers=$(docker node ls --filter role=manager --format '{{.ID}}' | wc -l)
    if [ "$managers" -le 1 ]; then
        # A whole-estate destroy (swarm.dissolve_on_destroy): the swarm goes with its last manager.
        if [ "${DISSOLVE:-false}" = true ]; then
            echo "$NODE is the last manager: the swarm is dissolved when it leaves" >&2
            exit 0
        fi
        fail "refusing to remove the last manager: the swarm would lose its control plane and all its state"
    fi
    reachable=$(docker node ls --filter role=manager --format '{{.ManagerStatus}}' | grep -c -e Leader -e Reachable || true)
    self=$(docker node inspect --format '{{.ManagerStatus.Reachability}}' "$NODE")
    [ "$self" = reachable ] && reachable=$((reachable - 1))
    remaining=$((managers - 1))
    quorum=$((remaining / 2 + 1))
    [ "$reachable" -ge "$quorum" ] ||
        fail "refusing to demote: $reachable of the $remaining remaining managers are reachable," \
            "and their quorum needs $quorum; bring the unreachable managers back first"
fi

# The replicated services that run here must end up running elsewhere; global ones just stop.
services=$(docker node ps --filter desired-state=running --format '{{.Name}}' "$NODE" | sed 's/\.[^.]*$//' | sort -u)
if [ "$(docker node inspect --format '{{.Spec.Availability}}' "$NODE")" != drain ]; then
    docker node update --availability drain "$NODE" >/dev/null || fail "cannot drain"
    echo "draining" >&2
fi
# A task is still here while the orchestrator wants it here or its container has not stopped.
still_here() {
    # The name goes last: history rows indent it with "\_ ".
    docker node ps --format '{{.DesiredState}} {{.CurrentState}} {{.Name}}' "$NODE" |
        awk '$1 == "Running" || $2 ~ /^(New|Pending|Assigned|Accepted|Preparing|Ready|Starting|Running)$/ {print $NF}'
}
not_moved() {
    for service in $services; do
        docker service inspect "$service" >/dev/null 2>&1 || continue
        [ -z "$(docker service inspect --format '{{if .Spec.Mode.Global}}global{{end}}' "$service")" ] || continue
        docker service ps --filter desired-state=running --format '{{.CurrentState}}' "$service" |
            grep -qv '^Running' && echo "$service"
    done
    return 0
}
waited=0
while [ -n "$(still_here)$(not_moved)" ]; do
    [ "$waited" -lt "$DRAIN_TIMEOUT" ] ||
        fail "tasks have not moved after ${DRAIN_TIMEOUT}s of draining (still here: $(still_here | tr '\n' ' ')" \
            "not running elsewhere: $(not_moved | tr '\n' ' '))- can their placement constraints be met on" \
            "another node? The node stays drained; fix the constraints and run again."
    sleep 1
    waited=$((waited + 1))
done
echo "its tasks have moved" >&2

if [ "$role" = manager ]; then
    docker node demote "$NODE" >/dev/null || fail "docker node demote failed"
    echo "demoted" >&2
fi
