"""L4 HAProxy and keepalived configs: validated by haproxy and keepalived themselves, then read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.l4 import l4_machine
from components.model import load_estate
from components.render.l4 import (
    BACKUP_PRIORITY,
    MASTER_PRIORITY,
    VRRP_AUTH,
    render_haproxy,
    render_keepalived,
    render_vrrp_auth,
)
from tests.harness.project import estate_of, prod_spec
from tests.harness.specs import run_tool, tool, variant


def _haproxy_check(text: str, tmp_path: Path) -> str | None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    result = run_tool([tool("haproxy"), "-c", "-f", str(path)])
    return None if result.returncode == 0 else result.stdout + result.stderr


def _keepalived_check(text: str, tmp_path: Path, name: str, password: str | None = "pw") -> str | None:
    """keepalived -t of the config, its password file (when there is one) where the config includes it."""
    auth = tmp_path / f"vrrp-auth-{name}.conf"
    auth.unlink(missing_ok=True)
    if password is not None:
        auth.write_text(render_vrrp_auth(password))
    path = tmp_path / f"keepalived-{name}.conf"
    path.write_text(text.replace(f"include {VRRP_AUTH}", f"include {auth}"))
    result = run_tool([tool("keepalived"), "-t", "-f", str(path)])
    return None if result.returncode == 0 else result.stdout + result.stderr


@pytest.mark.parametrize(
    "kwargs", [{}, dict(managers=1, workers=0, hypervisors=1, nfs=False), dict(managers=5, workers=7)]
)
def test_haproxy_accepts_the_generated_l4_config(kwargs: dict, tmp_path: Path) -> None:
    spec = load_estate(variant(**kwargs))
    text = render_haproxy(spec)
    assert _haproxy_check(text, tmp_path) is None, _haproxy_check(text, tmp_path)


def test_each_tcp_route_gets_a_frontend_to_the_same_port_on_every_l7_node(tmp_path: Path) -> None:
    raw = estate_of("prod")
    stack = next(iter(raw["stacks"]))
    raw["stacks"][stack].setdefault("services", {})["ssh"] = {"tcp": [{"port": 22, "published": 2222},
                                                                      {"port": 9418, "published": 9418}]}  # fmt: skip
    spec = load_estate(raw)
    text = render_haproxy(spec)
    assert _haproxy_check(text, tmp_path) is None, _haproxy_check(text, tmp_path)
    for published in (2222, 9418):
        assert f"frontend lb4_tcp{published}\n    bind *:{published}\n    mode tcp\n" in text
        servers = re.findall(rf"^    server (\S+) (\S+):{published} send-proxy track lb4_swarm_bk/(\S+)$", text, re.M)
        assert [(name, address) for name, address, _ in servers] == [(n.name, str(n.address)) for n in spec.l7_nodes()]
        assert all(name == tracked for name, _, tracked in servers)


@pytest.mark.parametrize("password", ["s3cretPw", "8charsPW"])
def test_keepalived_accepts_both_nodes_configs(password: str, tmp_path: Path) -> None:
    spec = prod_spec()
    for index, node in enumerate(spec.l4.nodes):
        text = render_keepalived(spec, index)
        assert f"include {VRRP_AUTH}" in text and password not in text
        problem = _keepalived_check(text, tmp_path, node.name, password)
        assert problem is None, problem


def test_validators_reject_broken_configs(tmp_path: Path) -> None:
    """Controls: the two checks above fail on a broken file, so their passes mean something."""
    spec = prod_spec()
    assert _haproxy_check(render_haproxy(spec).replace("balance source", "balance sauce"), tmp_path)
    broken = render_keepalived(spec, 0).replace("virtual_router_id 51", "virtual_router_id 300")
    assert _keepalived_check(broken, tmp_path, "broken")
    assert _keepalived_check(render_keepalived(spec, 0), tmp_path, "no-password", password=None)


def test_haproxy_config_has_the_seeds_shape() -> None:
    spec = prod_spec()
    text = render_haproxy(spec)
    lines = [line.strip() for line in text.splitlines()]
    front80 = lines[lines.index("frontend lb4_http"):]
    assert front80[1:3] == ["bind *:80", "mode tcp"] and "default_backend lb4_http_bk" in front80[:6]
    assert not any(line.startswith("redirect") for line in lines), "the L7 decides redirects (https_redirect: false)"
    plain = lines[lines.index("backend lb4_http_bk"):]
    assert [line for line in plain if line.startswith("server ")] == [
        f"server {n.name} {n.address}:80 send-proxy track lb4_swarm_bk/{n.name}" for n in spec.l7_nodes()
    ]
    backend = lines[lines.index("backend lb4_swarm_bk"):lines.index("backend lb4_http_bk")]
    for directive in ("mode tcp", "balance source", "hash-type consistent", "option tcp-check",
                      "tcp-check connect port 443 ssl send-proxy"):
        assert directive in backend, directive
    assert "bind *:443" in lines[lines.index("frontend lb4_swarm"):]
    servers = [line for line in backend if line.startswith("server ")]
    assert servers == [
        f"server {n.name} {n.address}:443 check inter 1000ms rise 1 fall 1 send-proxy "
        "check-sni d4science.org verify none"
        for n in spec.l7_nodes()
    ]
    assert [n.name for n in spec.l7_nodes()] == ["docker-swarm1", "docker-swarm2", "docker-swarm3"]


def test_server_list_follows_the_l7_label_and_timing_follows_the_model() -> None:
    raw = estate_of("prod")
    raw["swarm"]["workers"]["nodes"].append({"name": "docker-swarm4", "labels": ["l7=true"]})
    raw["l4"]["check"] = {"inter": "3s", "rise": 2, "fall": 4}
    raw["l7"]["https_port"] = 8443
    raw["l7"]["http_port"] = 8080
    spec = load_estate(raw)
    servers = re.findall(r"^\s+server (\S+) (\S+) (.*)$", render_haproxy(spec), re.M)
    nodes = [f"docker-swarm{i}" for i in (1, 2, 3, 4)]
    assert [(name, addr) for name, addr, _ in servers] == [
        *((name, f"10.20.0.{19 + i}:8443") for i, name in enumerate(nodes, 1)),
        *((name, f"10.20.0.{19 + i}:8080") for i, name in enumerate(nodes, 1)),
    ]
    assert all(rest.startswith("check inter 3000ms rise 2 fall 4 send-proxy") for _, _, rest in servers[:4])
    assert [rest for _, _, rest in servers[4:]] == [f"send-proxy track lb4_swarm_bk/{name}" for name in nodes]
    assert "tcp-check connect port 8443 ssl send-proxy" in render_haproxy(spec)


def test_keepalived_pair_shares_the_vip_with_distinct_priorities() -> None:
    spec = prod_spec()
    first, second = (render_keepalived(spec, i) for i in range(2))

    def value(text: str, key: str) -> str:
        match = re.search(rf"^\s*{key} (.+)$", text, re.M)
        assert match, key
        return match.group(1).strip()

    assert value(first, "priority") == str(MASTER_PRIORITY) and value(second, "priority") == str(BACKUP_PRIORITY)
    assert value(first, "state") == "MASTER" and value(second, "state") == "BACKUP"
    for text, me, peer in ((first, "10.20.0.6", "10.20.0.7"), (second, "10.20.0.7", "10.20.0.6")):
        assert value(text, "virtual_router_id") == "51"
        assert "10.20.0.5/24 dev eth0" in text
        assert value(text, "unicast_src_ip") == me
        assert re.search(rf"unicast_peer \{{\s*{re.escape(peer)}\s*\}}", text)
        assert re.search(r"track_script \{\s*chk_haproxy\s*\}", text)
        assert value(text, "include") == VRRP_AUTH and "auth_pass" not in text  # the password lives apart
        assert value(text, "auth_type") == "PASS"


def test_rhel_family_keeps_the_admin_socket_where_its_package_allows(tmp_path: Path) -> None:
    raw = estate_of("prod")
    raw["base_image"]["family"] = "rhel"
    text = render_haproxy(load_estate(raw))
    assert "stats socket /var/lib/haproxy/admin.sock mode 660 level admin" in text
    assert _haproxy_check(text, tmp_path) is None


def test_l4_vms_go_on_different_hypervisors() -> None:
    spec = prod_spec()
    assert [l4_machine(spec, i).hypervisor for i in range(2)] == ["kvm1", "kvm2"]
    raw = estate_of("prod")
    raw["l4"]["nodes"][1]["hypervisor"] = "kvm3"
    assert l4_machine(load_estate(raw), 1).hypervisor == "kvm3"
