#!/bin/sh
# Converge one node's labels, availability and role, from a manager.
# In:  NODE (node id or hostname), ROLE (manager|worker), AVAILABILITY (active|pause|drain),
#      LABELS (whitespace-separated key=value the estate declares), OWNED_PREFIXES (label key
#      prefixes the estate owns).
# A label the node carries but the estate does not declare is removed only when the estate
# declared it before or owns its prefix: labels set by other people stay. The node itself
# remembers which keys the estate declared (label swarm-estate.labels), so this works the same
# over SSH and docker exec, and survives a lost Pulumi state.
# Out: node=, role=, availability= and one `label key=value` line per declared label.
set -eu
: "${NODE:?NODE is required}" "${ROLE:?ROLE is required}" "${AVAILABILITY:?AVAILABILITY is required}"
LABELS=${LABELS:-}
fail() { echo "swarm-node $NODE: $*" >&2; exit 1; }

docker node inspect "$NODE" >/dev/null 2>&1 || fail "no such node in the swarm (did it join?)"
node_field() { docker node inspect --format "$1" "$NODE"; }

BOOKKEEPING=swarm-estate.labels
previous=$(node_field "{{index .Spec.Labels \"$BOOKKEEPING\"}}" | tr ',' ' ')
# shellcheck disable=SC2016 # a Go template, not shell expansion
current=$(node_field '{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}} {{end}}')
keys=$(for pair in $LABELS; do printf '%s,' "${pair%%=*}"; done)
keys=${keys%,}

# POSIX sh has no local variables: the helpers' loop variables must not reuse the callers' names.
declared() { for _d in $LABELS; do [ "${_d%%=*}" = "$1" ] && return 0; done; return 1; }
owned() {
    for _o in $previous; do [ "$_o" = "$1" ] && return 0; done
    for _o in ${OWNED_PREFIXES:-}; do case "$1" in "$_o"*) return 0 ;; esac; done
    return 1
}

set --
for pair in $LABELS; do
    case " $current " in *" $pair "*) ;; *) set -- "$@" --label-add "$pair" ;; esac
done
for pair in $current; do
    key=${pair%%=*}
    [ "$key" != "$BOOKKEEPING" ] || continue
    if ! declared "$key" && owned "$key"; then set -- "$@" --label-rm "$key"; fi
done
case " $current " in *" $BOOKKEEPING=$keys "*) ;; *) set -- "$@" --label-add "$BOOKKEEPING=$keys" ;; esac
if [ $# -gt 0 ]; then
    docker node update "$@" "$NODE" >/dev/null || fail "docker node update $* failed"
    echo "labels changed: $*" >&2
fi

if [ "$(node_field '{{.Spec.Availability}}')" != "$AVAILABILITY" ]; then
    docker node update --availability "$AVAILABILITY" "$NODE" >/dev/null || fail "cannot set availability"
    echo "availability set to $AVAILABILITY" >&2
fi

role=$(node_field '{{.Spec.Role}}')
if [ "$role" != "$ROLE" ]; then
    if [ "$ROLE" = manager ]; then
        docker node promote "$NODE" >/dev/null || fail "docker node promote failed"
    else
        managers=$(docker node ls --filter role=manager --format '{{.ID}}' | wc -l)
        [ "$managers" -gt 1 ] || fail "refusing to demote the last manager: the swarm would lose its control plane"
        docker node demote "$NODE" >/dev/null || fail "docker node demote failed"
    fi
    echo "role changed from $role to $ROLE" >&2
fi

echo "node=$NODE"
echo "role=$ROLE"
echo "availability=$AVAILABILITY"
for pair in $LABELS; do echo "label $pair"; done
