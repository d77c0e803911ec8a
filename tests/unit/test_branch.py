"""Branch stacks: names, slots, and a derivation under which two branch clusters share nothing."""

from __future__ import annotations

import copy
import itertools
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from ipaddress import IPv4Network, ip_network
from typing import Any

import pytest

from components.model import EstateConfigError, EstateSpec, load_estate
from components.model.branch import branch_metadata, derive_branch, preferred_slot, stack_name
from components.prepare import prepare
from tests.harness.project import ROOT, config_for, estate_of
from tools.branch_pins import BranchPoolExhausted, allocate_slot, allocate_slots
from tools.synth import SynthResult, run_program

VALID_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def ci_estate() -> dict[str, Any]:
    return estate_of("ci")


def derived(raw: dict[str, Any], stack: str, now: datetime | None = None) -> EstateSpec:
    """The branch stack's estate: the template validated as written, then derived for `stack`."""
    return derive_branch(load_estate(raw), stack, now)


def with_branch(raw: dict[str, Any], **settings: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["branch"] = {**raw.get("branch", {"ci_domain": "ci.example.test"}), **settings}
    return raw


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "branch",
    [
        "main",
        "feature/login",
        "Feature/Login-Page",
        "fix/ünïcode-ßtraße",
        "名前",
        "🚀-rocket",
        "123-starts-with-digit",
        "--",
        "",
        "a" * 300,
        "release/2026.11_hotfix#7",
    ],
)
def test_stack_names_are_valid_bounded_and_idempotent(branch: str) -> None:
    name = stack_name(branch)
    assert VALID_NAME.match(name), name
    assert len(name) <= 32
    assert "--" not in name and not name.endswith("-")
    assert stack_name(name) == name, "a stack name must map to itself (the workflows re-derive it)"


def test_a_valid_branch_name_is_kept_as_is() -> None:
    assert stack_name("fix-123") == "fix-123"
    assert stack_name("feature-login") == "feature-login"


def test_unicode_is_transliterated_not_dropped() -> None:
    assert stack_name("fix/ünïcode").startswith("fix-unicode-")
    assert stack_name("名前") != stack_name("名称"), "names in other scripts must not all collapse to one stack"


def test_names_that_collide_after_sanitising_stay_apart() -> None:
    branches = ["feature-foo", "feature/foo", "Feature/Foo", "feature_foo", "feature--foo", "FEATURE-FOO"]
    names = [stack_name(b) for b in branches]
    assert len(set(names)) == len(branches), dict(zip(branches, names, strict=True))
    assert names[0] == "feature-foo"
    assert all(n.startswith("feature-foo") for n in names)


def test_long_names_are_truncated_with_a_stable_hash_suffix() -> None:
    a = "feature/" + "x" * 200 + "-one"
    b = "feature/" + "x" * 200 + "-two"
    assert stack_name(a) != stack_name(b), "names differing only past the cut must not share a stack"
    assert stack_name(a) == stack_name(a)
    assert re.fullmatch(r"feature-x+-[0-9a-f]{8}", stack_name(a))


def test_branch_cli_prints_the_stack_name() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.branch_pins", "name", "Feature/Foo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == stack_name("Feature/Foo")


# --- slots ---------------------------------------------------------------------------------


def test_preferred_slot_is_the_same_in_every_process() -> None:
    code = "from components.model.branch import preferred_slot; print(preferred_slot('feature-login', 256))"
    seen = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
        )
        seen.add(int(out.stdout))
    assert seen == {preferred_slot("feature-login", 256)}


def fifty_branches() -> list[str]:
    return [stack_name(f"feature/{word}-{i}") for i, word in enumerate(itertools.islice(_words(), 50))]


def _words():
    for a, b in itertools.product(["login", "api", "ui", "db", "docs", "ci", "fix", "perf"], repeat=2):
        yield f"{a}-{b}"


def test_fifty_branch_stacks_get_distinct_slots_and_share_nothing() -> None:
    template = ci_estate()
    names = fifty_branches()
    slots = 256
    allocations = allocate_slots(names, slots)
    assert len({a.slot for a in allocations}) == 50
    assert allocate_slots(names, slots) == allocations, "allocation must be deterministic"
    # every derived estate is a valid estate (derive_branch validates it again)
    estates = [derived(with_branch(template, slot=a.slot), a.stack, now=NOW) for a in allocations]
    node_subnets = [e.node_network.subnet for e in estates]
    overlay_subnets = [e.public_network.subnet for e in estates]
    for group in (node_subnets, overlay_subnets, node_subnets + overlay_subnets):
        for x, y in itertools.combinations(group, 2):
            assert not x.overlaps(y), f"{x} overlaps {y}"
    port_ranges = []
    for spec in estates:
        d = spec.docker
        l7 = len(spec.l7_nodes())
        port_ranges.append(
            {*range(d.l7_http_port, d.l7_http_port + l7), *range(d.l7_https_port, d.l7_https_port + l7)}
        )
    for x, y in itertools.combinations(port_ranges, 2):
        assert not x & y
    assert len({e.name for e in estates}) == 50 and len({e.domain for e in estates}) == 50
    assert len({e.node_network.name for e in estates}) == 50


def test_a_hash_collision_is_detected_and_resolved_by_probing() -> None:
    slots = 16
    by_slot: dict[int, list[str]] = {}
    for i in range(200):
        name = f"branch-{i}"
        by_slot.setdefault(preferred_slot(name, slots), []).append(name)
    first, second = next(names for names in by_slot.values() if len(names) >= 2)[:2]
    a, b = allocate_slots([first, second], slots)
    assert a.slot == a.preferred and not a.collided_with
    assert b.preferred == a.slot and b.slot != a.slot
    assert b.collided_with == (first,)
    assert first in b.report() and str(b.slot) in b.report()


def test_an_existing_stack_keeps_its_slot() -> None:
    taken = {"feature-a": 7}
    assert allocate_slot("feature-a", 16, taken).slot == 7


def test_exhausted_pool_is_a_clear_error() -> None:
    names = [f"branch-{i}" for i in range(5)]
    with pytest.raises(BranchPoolExhausted, match=r"all 4 slots .* \(4 branch stacks\)"):
        allocate_slots(names, 4)


def test_the_pool_size_bounds_the_pinned_slot() -> None:
    # A /22 of /24s is four slots.
    raw = with_branch(ci_estate(), node_pool="10.222.0.0/22", node_prefix=24, slot=4)
    with pytest.raises(EstateConfigError, match=r"estate\.branch\.slot: slot 4 is outside the pool's 4 slots"):
        derived(raw, "feature-a", now=NOW)


def test_overlapping_pools_are_rejected() -> None:
    raw = with_branch(ci_estate(), node_pool="10.128.0.0/16", overlay_pool="10.128.0.0/10")
    with pytest.raises(EstateConfigError, match=r"branch\.overlay_pool: overlaps"):
        derived(raw, "feature-a", now=NOW)


def test_bad_branch_settings_name_their_path() -> None:
    raw = with_branch(ci_estate(), node_prefx=24)
    with pytest.raises(EstateConfigError, match=r"swarm-estate:estate\.branch\.node_prefx"):
        derived(raw, "feature-a", now=NOW)


# --- the derivation ------------------------------------------------------------------------


def test_without_a_branch_section_the_estate_is_unchanged() -> None:
    raw = estate_of("dev")
    assert prepare(raw, ROOT, "dev").spec == load_estate(raw)


def test_derivation_is_pure_and_removes_the_branch_section() -> None:
    raw = ci_estate()
    before = copy.deepcopy(raw)
    template = load_estate(raw)
    one = derive_branch(template, "feature-a", now=NOW)
    assert raw == before and template == load_estate(before), "the inputs must not be modified"
    assert one.branch is None
    assert derive_branch(template, "feature-a", now=NOW) == one
    assert one.name == "feature-a"
    assert one.domain == "feature-a.ci.swarm-estate.test"
    assert one.stacks["demo"].services["web"].dns_names == ["demo.feature-a.ci.swarm-estate.test"]
    assert one.protect is False


def test_nodes_carry_branch_and_creation_time_labels() -> None:
    raw = with_branch(ci_estate(), created="2026-11-20T08:00:00Z")
    spec = derived(raw, "feature-a", now=NOW)
    for node in spec.nodes:
        assert node.labels["swarm-estate.branch"] == "feature-a"
        assert node.labels["swarm-estate.created"] == "2026-11-20T08:00:00Z", "a pinned time wins over now"
    assert spec.l7_nodes(), "the template's own labels must survive"


def test_an_unpinned_creation_time_is_left_out_so_a_synth_is_reproducible() -> None:
    spec = derived(ci_estate(), "feature-a")
    assert spec == derived(ci_estate(), "feature-a")
    assert all("swarm-estate.created" not in n.labels for n in spec.nodes)
    assert all(n.labels["swarm-estate.branch"] == "feature-a" for n in spec.nodes)
    stamped = derived(ci_estate(), "feature-a", now=NOW)
    assert {n.labels["swarm-estate.created"] for n in stamped.nodes} == {"2026-11-22T12:00:00Z"}


def test_branch_metadata_for_the_reaper() -> None:
    raw = with_branch(ci_estate(), slot=3, created="2026-11-20T08:00:00Z", source="feature/a")
    meta = branch_metadata(load_estate(raw), "org/swarm-estate/feature-a-1234abcd", now=NOW)
    assert meta == {"stack": "feature-a-1234abcd", "source": "feature/a", "slot": 3, "created": "2026-11-20T08:00:00Z"}
    assert branch_metadata(load_estate(estate_of("dev")), "dev") is None
    assert branch_metadata(load_estate(ci_estate()), "feature-a")["created"] is None  # type: ignore[index]


def test_a_libvirt_template_gets_its_own_network_addresses_and_vrrp_id() -> None:
    raw = with_branch(estate_of("prod"), slot=5)
    spec = derived(raw, "feature-a", now=NOW)
    subnet = IPv4Network("10.222.5.0/24")
    assert spec.node_network.subnet == subnet
    assert spec.node_network.name == "feature-a-net"
    assert all(h.network in (None, "feature-a-net") for h in spec.hypervisors)
    assert str(spec.l4.virtual_ip) == "10.222.5.5", "fixed addresses keep their host offset"
    assert [str(n.address) for n in spec.l4.nodes] == ["10.222.5.6", "10.222.5.7"]
    assert all(n.address in subnet for n in spec.nodes)
    assert spec.l4.vrrp_router_id == 6
    assert spec.protect is False
    assert spec.registry.dns_name == "docker-registry.feature-a.ci.example.test"
    assert spec.stacks["conductor"].services["conductor-server"].dns_names == [
        "conductor-api.feature-a.ci.example.test"
    ]
    volume = spec.stacks["stager"].volumes["stager-data"]
    assert volume.subpath == "branches/feature-a/data/stager"
    assert spec.registry.subpath == "branches/feature-a/registry"
    assert not spec.warnings


def test_a_shared_existing_libvirt_network_is_refused() -> None:
    raw = with_branch(estate_of("prod"))
    raw["node_network"]["mode"] = "existing"
    with pytest.raises(EstateConfigError, match=r"estate\.node_network\.mode: .*cannot share an existing"):
        derived(raw, "feature-a", now=NOW)


def test_two_dns_names_that_would_merge_are_an_error() -> None:
    raw = ci_estate()
    raw["stacks"]["demo"]["services"]["web"]["dns_names"] = ["demo.ci.swarm-estate.test", "demo.com"]
    with pytest.raises(EstateConfigError, match=r"both become demo\.feature-a\.ci\.swarm-estate\.test"):
        derived(raw, "feature-a", now=NOW)


def test_too_many_nodes_for_the_port_stride_is_an_error() -> None:
    raw = ci_estate()
    raw["swarm"]["workers"]["count"] = 6
    with pytest.raises(EstateConfigError, match=r"branch\.port_stride: 7 nodes .* at least 14"):
        derived(raw, "feature-a", now=NOW)


# --- two branch stacks synthesised side by side ---------------------------------------------


def _engine_claims(result: SynthResult, engine_host: str) -> dict[str, set[str]]:
    """What a synthesised stack claims on the shared engine: names, subnets, published ports, URLs."""
    providers = {r["name"] for r in result.by_type("pulumi:providers:docker") if r["inputs"].get("host") == engine_host}
    claims: dict[str, set[str]] = {"name": set(), "subnet": set(), "port": set(), "url": set()}
    for r in result.resources:
        if r["provider"] not in providers or r["type"] == "docker:index/remoteImage:RemoteImage":
            continue
        if "name" in r["inputs"]:
            claims["name"].add(r["inputs"]["name"])
        for ipam in r["inputs"].get("ipamConfigs", []):
            claims["subnet"].add(ipam["subnet"])
        for port in r["inputs"].get("ports", []):
            claims["port"].add(f"{port.get('ip', '0.0.0.0')}:{port['external']}")
    for r in result.by_type("docker:index/network:Network"):
        for ipam in r["inputs"].get("ipamConfigs", []):
            claims["subnet"].add(ipam["subnet"])
    claims["url"] = set(result.outputs["public_urls"])
    return claims


def test_two_branch_stacks_from_the_ci_template_share_no_name_subnet_or_port() -> None:
    template = ci_estate()
    engine = template["docker"]["engine_host"]
    results = []
    for branch in ("feature/login", "fix/ünïcode-bug"):
        stack = stack_name(branch)  # the program derives the branch's estate from the stack name itself
        results.append(_engine_claims(run_program(config_for(template), stack=stack), engine))
    a, b = results
    assert a["name"] and a["subnet"] and a["port"] and a["url"], f"the synth claimed nothing to compare: {a}"
    for kind in a:
        assert not a[kind] & b[kind], f"both branch stacks claim {kind} {a[kind] & b[kind]}"
    nets_a = [ip_network(s) for s in a["subnet"]]
    nets_b = [ip_network(s) for s in b["subnet"]]
    for x, y in itertools.product(nets_a, nets_b):
        assert not x.overlaps(y), f"{x} overlaps {y}"
