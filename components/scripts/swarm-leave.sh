#!/bin/sh
# Make this node leave the swarm (the last step a node runs itself on removal).
# A manager must have been demoted first, so leaving never costs the swarm a Raft member; only
# the last manager of a swarm being destroyed (DISSOLVE=true) leaves as a manager, ending it.
set -eu
fail() { echo "swarm-leave on $(hostname): $*" >&2; exit 1; }

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fail "cannot reach the local Docker engine"
case "$state" in
inactive) echo "not in a swarm; nothing to do" >&2; exit 0 ;;
active) ;;
*) fail "the node's swarm state is '$state'; cannot leave cleanly" ;;
esac
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
    managers=$(docker node ls --filter role=manager --format '{{.ID}}' | wc -l)
    if [ "${DISSOLVE:-false}" = true ] && [ "$managers" -le 1 ]; then
        docker swarm leave --force >/dev/null || fail "docker swarm leave --force failed"
        echo "left as the last manager: the swarm is dissolved" >&2
        exit 0
    fi
    fail "this node is still a manager: demote it first (removing it from the estate does that before leaving)"
fi
docker swarm leave >/dev/null || fail "docker swarm leave failed"
echo "left the swarm" >&2
