#!/bin/sh
# Check that the manager the estate runs its node commands on can do so (the create step of a
# node's registration; its delete step is swarm-node-rm.sh).
set -eu
fail() { echo "swarm-manager-check on $(hostname): $*" >&2; exit 1; }
[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
    fail "this node is not a swarm manager; node commands must run on a manager"
echo "manager=$(docker info --format '{{.Swarm.NodeID}}')"
