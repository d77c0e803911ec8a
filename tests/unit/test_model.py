"""Every validation rule: one bad config each, the message names the config path and the rule,
and the program registers nothing at all."""

from __future__ import annotations

from typing import Any

import pytest

from components.model import EstateConfigError, load_estate
from components.prepare import prepare
from tests.harness.project import ROOT, config_for, estate_of
from tools.synth import FakeEngine, RecordingMonitor

P = "swarm-estate:estate"


def rejected(estate: dict[str, Any]) -> list[str]:
    """Every rule, the model's own and those that need the compose files (routes), as the program meets them."""
    with pytest.raises(EstateConfigError) as info:
        prepare(estate, ROOT, "test")
    return info.value.problems


def assert_rule(estate: dict[str, Any], path: str, *fragments: str) -> None:
    """The rule fires at `path`, and the whole program stops before registering anything."""
    problems = rejected(estate)
    hits = [p for p in problems if p.startswith(f"{P}.{path}: ")]
    assert hits, f"no problem reported at {path}: {problems}"
    for fragment in fragments:
        assert any(fragment in h for h in hits), f"{fragment!r} not in {hits}"

    from tools.synth import run_program

    monitor = RecordingMonitor(FakeEngine())
    with pytest.raises(EstateConfigError):
        run_program(config_for(estate), monitor=monitor)
    assert monitor.requests == [], "resources were registered before the config was rejected"


def test_examples_are_valid():
    for stack in ("prod", "dev"):
        spec = load_estate(estate_of(stack))
        assert spec.nodes, stack


@pytest.mark.parametrize(
    "count,fragment",
    [
        (2, "2 managers cannot tolerate any failure; use 1, 3, 5 or 7"),
        (4, "use 1, 3, 5 or 7"),
        (9, "at most 7"),
        (0, "at least 1 manager"),
    ],
)
def test_manager_count_must_be_odd_1_to_7(prod_estate, count, fragment):
    prod_estate["swarm"]["managers"]["count"] = count
    assert_rule(prod_estate, "swarm.managers", fragment)


def test_node_names_unique(prod_estate):
    prod_estate["swarm"]["workers"]["nodes"][1]["name"] = "docker-swarm-mgr2"
    assert_rule(prod_estate, "swarm.workers.nodes[1]",
                "'docker-swarm-mgr2' is also the name of manager #2 of swarm-estate:estate.swarm.managers.count")


def test_addresses_unique(prod_estate):
    prod_estate["swarm"]["workers"]["nodes"][0]["address"] = "10.20.0.11"  # manager 2's slot
    assert_rule(prod_estate, "swarm.workers.nodes[0]", "10.20.0.11 is given to more than one of")


def test_l4_virtual_ip_cannot_be_a_node_address(prod_estate):
    prod_estate["l4"]["virtual_ip"] = "10.20.0.6"
    assert_rule(prod_estate, "l4.virtual_ip", "10.20.0.6 is given to more than one")


def test_addresses_inside_subnet(prod_estate):
    prod_estate["swarm"]["workers"]["nodes"][2]["address"] = "192.168.1.20"
    assert_rule(prod_estate, "swarm.workers.nodes[2]", "outside the node subnet 10.20.0.0/24")


def test_address_cannot_be_gateway(prod_estate):
    prod_estate["l4"]["nodes"][0]["address"] = "10.20.0.1"
    assert_rule(prod_estate, "l4.nodes[0]", "network, broadcast or gateway")


def test_subnet_exhaustion_is_reported(prod_estate):
    prod_estate["node_network"]["subnet"] = "10.20.0.0/27"  # 30 hosts: workers from .20 run out at .30
    prod_estate["l4"]["enabled"] = False
    prod_estate["swarm"]["workers"]["count"] = 12
    assert_rule(prod_estate, "swarm.workers.count", "no address left for workers #12")


def test_dns_name_claimed_twice(prod_estate):
    prod_estate["stacks"]["shinyproxy"]["services"]["shinyproxy"]["dns_names"] = ["conductor.d4science.org"]
    assert_rule(
        prod_estate,
        "stacks.shinyproxy.services.shinyproxy.dns_names[0]",
        "claimed by conductor/conductor-ui and shinyproxy/shinyproxy",
    )


def test_dns_name_claimed_by_platform_stack(prod_estate):
    prod_estate["registry"]["dns_name"] = "stager.d4science.org"
    assert_rule(prod_estate, "registry.dns_name", "claimed by stager/ui and the registry")


@pytest.mark.parametrize("bad", ["-bad.d4science.org", "under_score.example.org", "nodot", "10.1.2.3", "a..b.org"])
def test_dns_names_valid(prod_estate, bad):
    prod_estate["stacks"]["stager"]["services"]["ui"]["dns_names"] = [bad]
    assert_rule(prod_estate, "stacks.stager.services.ui.dns_names[0]", repr(bad))


def test_sticky_mode_valid(prod_estate):
    prod_estate["stacks"]["shinyproxy"]["services"]["shinyproxy"]["sticky"] = "ip"
    assert_rule(prod_estate, "stacks.shinyproxy.services.shinyproxy.sticky", "'ip' is not allowed", "'cookie'")


def test_replicated_service_needs_check_uri(prod_estate):
    del prod_estate["stacks"]["conductor"]["services"]["conductor-ui"]["check_uri"]
    assert_rule(prod_estate, "stacks.conductor.services.conductor-ui.check_uri",
                "2 replicas (set here) need a health-check URI")


def test_single_replica_needs_no_check_uri(prod_estate):
    del prod_estate["stacks"]["stager"]["services"]["ui"]["check_uri"]
    assert prepare(prod_estate, ROOT, "prod").routes


@pytest.mark.parametrize("port", [0, 70000])
def test_ports_in_range(prod_estate, port):
    prod_estate["l7"]["http_port"] = port
    assert_rule(prod_estate, "l7.http_port")


def test_ports_do_not_clash_on_l7_nodes(prod_estate):
    prod_estate["l7"]["https_port"] = 7946
    assert_rule(prod_estate, "l7.https_port", "clashes with swarm gossip")


def test_published_stats_port_clashes_with_ssh(prod_estate):
    prod_estate["l7"]["stats"] = {"publish": True, "port": 22}
    assert_rule(prod_estate, "l7.stats.port", "clashes with sshd")


@pytest.mark.parametrize("label", ["function production", "=x", "k=v w"])
def test_labels_are_key_value(prod_estate, label):
    prod_estate["swarm"]["workers"]["labels"] = [label]
    assert_rule(prod_estate, "swarm.workers.labels")


def test_hypervisor_reference_exists(prod_estate):
    prod_estate["swarm"]["workers"]["nodes"][0]["hypervisor"] = "kvm9"
    assert_rule(
        prod_estate, "swarm.workers.nodes[0].hypervisor", "hypervisor 'kvm9' does not exist", "kvm1, kvm2, kvm3"
    )


def test_nfs_export_reference_exists(prod_estate):
    prod_estate["stacks"]["stager"]["volumes"]["stager-data"]["nfs"] = "scratch"
    assert_rule(prod_estate, "stacks.stager.volumes.stager-data.nfs", "NFS export 'scratch' does not exist")


def test_nfs_mount_reference_exists(prod_estate):
    prod_estate["nfs"]["mounts"][0]["export"] = "home"
    assert_rule(prod_estate, "nfs.mounts[0].export", "'home' does not exist")


def test_network_reference_exists(prod_estate):
    prod_estate["hypervisors"][1]["network"] = "default"
    assert_rule(prod_estate, "hypervisors[1].network", "network 'default' does not exist (known: swarm)")


def test_pinned_managers_must_spread(prod_estate):
    prod_estate["swarm"]["managers"]["hypervisors"] = None
    prod_estate["swarm"]["managers"]["nodes"] = [{"name": f"m{i}", "hypervisor": "kvm1"} for i in range(3)]
    assert_rule(prod_estate, "swarm.managers", "3 of 3 managers sit on one hypervisor although 3 are available")


def test_unavoidable_bad_spread_is_a_warning(prod_estate):
    prod_estate["hypervisors"] = prod_estate["hypervisors"][:2]
    spec = load_estate(prod_estate)
    assert [(w.path, w.message) for w in spec.warnings if "quorum" in w.message]
    assert sorted(n.hypervisor or "" for n in spec.managers) == ["kvm1", "kvm1", "kvm2"]


def test_nat_network_with_several_hypervisors(prod_estate):
    prod_estate["node_network"] = {"subnet": "10.20.0.0/24", "mode": "nat", "name": "swarm"}
    assert_rule(prod_estate, "node_network.mode", "NAT network is private to one hypervisor")


def test_l7_replicas_need_labelled_nodes(prod_estate):
    prod_estate["l7"]["replicas"] = 4
    assert_rule(prod_estate, "l7.replicas", "4 L7 replicas need 4 active nodes labelled l7=true", "but 3 are")


def test_unknown_key_is_an_error(prod_estate):
    prod_estate["swarm"]["workerz"] = 3
    assert_rule(prod_estate, "swarm.workerz", "unknown setting")


def test_existing_hosts_need_addresses(prod_estate):
    prod_estate.update(substrate="existing", hypervisors=[])
    prod_estate["swarm"]["managers"] = [
        {"name": "a", "address": "10.20.0.31"},
        {"name": "b"},
        {"name": "c", "address": "10.20.0.33"},
    ]
    prod_estate["swarm"]["workers"] = [{"name": "w1", "address": "10.20.0.41", "labels": ["l7=true"]}]
    prod_estate["l7"]["replicas"] = 1
    assert_rule(prod_estate, "swarm.managers.nodes[1].address", "an existing host needs its address")


def test_ssh_substrates_need_a_private_key(prod_estate):
    del prod_estate["ssh"]["private_key_secret"]
    assert_rule(prod_estate, "ssh.private_key_secret", "runs its commands over SSH")


def test_l4_pair_has_two_nodes(prod_estate):
    prod_estate["l4"]["nodes"] = prod_estate["l4"]["nodes"][:1]
    assert_rule(prod_estate, "l4", "exactly 2 nodes, 1 given")


def test_whole_estate_must_be_an_object():
    with pytest.raises(EstateConfigError, match="must be an object"):
        load_estate(["not", "a", "mapping"])


def test_several_problems_are_reported_together(prod_estate):
    prod_estate["swarm"]["managers"]["count"] = 2
    prod_estate["l7"]["replicas"] = 5
    problems = rejected(prod_estate)
    assert any(p.startswith(f"{P}.swarm.managers:") for p in problems)
    assert any(p.startswith(f"{P}.l7.replicas:") for p in problems)


def test_placement_is_stable_when_a_worker_is_added(prod_estate):
    before = {n.name: n for n in load_estate(prod_estate).nodes}
    prod_estate["swarm"]["workers"]["count"] += 1
    after = {n.name: n for n in load_estate(prod_estate).nodes}
    assert set(after) - set(before) == {"docker-swarm6"}
    assert all(after[name] == node for name, node in before.items())


def test_managers_spread_round_robin(prod_estate):
    spec = load_estate(prod_estate)
    assert [n.hypervisor for n in spec.managers] == ["kvm1", "kvm2", "kvm3"]


def test_live_restore_is_refused_in_swarm_mode(prod_estate):
    prod_estate["engine"]["live_restore"] = True
    assert_rule(prod_estate, "engine.live_restore", "incompatible with swarm mode")


@pytest.mark.parametrize("value", ["1m30s", "2 s", "-1s", "1.5s", "soon"])
def test_durations_are_haproxy_times(prod_estate, value):
    """Model durations go verbatim into haproxy.cfg, so Go's compound form is refused with the reason."""
    prod_estate["l7"]["update_delay"] = value
    assert_rule(prod_estate, "l7.update_delay", "write a whole number with ms, s, m, h or d")


@pytest.mark.parametrize("platform", ["portainer", "registry"])
def test_an_internal_platform_ui_needs_the_operators_networks(prod_estate, platform: str):
    del prod_estate["l7"]["operator_networks"]
    assert_rule(prod_estate, f"{platform}.public", "only from the operators' networks", "l7.operator_networks")
    prod_estate[platform]["public"] = True
    other = {"portainer": "registry", "registry": "portainer"}[platform]
    prod_estate[other]["enabled"] = False
    load_estate(prod_estate)


def test_platform_routes_answer_the_operators_unless_public():
    raw = estate_of("prod")
    operators = [str(n) for n in load_estate(raw).l7.operator_networks]
    routes = {r.stack: r.routing for r in prepare(raw, ROOT, "prod").routes}
    assert ([str(n) for n in routes["portainer"].allow], routes["portainer"].allow_only_writes) == (operators, False)
    assert ([str(n) for n in routes["registry"].allow], routes["registry"].allow_only_writes) == (operators, True)
    raw["portainer"]["public"] = raw["registry"]["public"] = True
    routes = {r.stack: r.routing for r in prepare(raw, ROOT, "prod").routes}
    assert routes["portainer"].allow == [] and routes["registry"].allow == []


def test_the_l7_tasks_container_check_is_the_models_and_takes_only_docker_durations(dev_estate, synth):
    default = synth(dev_estate)
    (service,) = [r for r in default.by_type("docker:index/service:Service") if r["name"].endswith("-l7-service")]
    check = service["inputs"]["taskSpec"]["containerSpec"]["healthcheck"]
    assert (check["interval"], check["timeout"], check["retries"], check["startPeriod"]) == ("5s", "2s", 3, "5s")
    dev_estate["l7"]["container_check"] = {"timeout": "30s", "start_period": "2m"}
    slow = synth(dev_estate)
    (service,) = [r for r in slow.by_type("docker:index/service:Service") if r["name"].endswith("-l7-service")]
    check = service["inputs"]["taskSpec"]["containerSpec"]["healthcheck"]
    assert (check["timeout"], check["startPeriod"]) == ("30s", "2m")
    # `up` waits for the tasks to turn healthy: longer checks, a longer wait (2 replicas x (2m + 4 x 5s + 30s))
    default_wait = default.by_type("docker:index/service:Service")
    waits = [int(r["inputs"]["convergeConfig"]["timeout"].rstrip("s")) for r in (*default_wait, service)
             if r["name"].endswith("-l7-service")]
    assert waits[1] - waits[0] >= 2 * (115 + 28), waits
    dev_estate["l7"]["container_check"] = {"timeout": "1d"}
    assert_rule(dev_estate, "l7.container_check.timeout", "Docker takes ms, s, m or h here, not days")
