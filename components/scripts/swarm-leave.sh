#!/bin/sh
# Make this node leave the swarm (the last step a node runs itself on removal).
# A manager must have been demoted first, so leaving never costs the swarm a Raft member.
set -eu
fail() { echo "swarm-leave on $(hostname): $*" >&2; exit 1; }

state=$(docker info --format '{{.Swarm.LocalNodeState}}') || fail "cannot reach the local Docker engine"
case "$state" in
inactive) echo "not in a swarm; nothing to do" >&2; exit 0 ;;
active) ;;
*) fail "the node's swarm state is '$state'; cannot leave cleanly" ;;
esac
[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ] ||
    fail "this node is still a manager: demote it first (removing it from the estate does that before leaving)"
docker swarm leave >/dev/null || fail "docker swarm leave failed"
echo "left the swarm" >&2
