"""A mermaid picture of the estate, drawn from the model alone (no resource state)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..model import EstateSpec, Node, Route


def _id(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9]", "_", p) for p in parts)


def _node_box(node: Node) -> str:
    labels = " ".join(f"{k}={v}" for k, v in node.labels.items())
    detail = f"{node.role} · {node.address}" + (f"<br/>{labels}" if labels else "")
    if node.availability != "active":
        detail += f"<br/>{node.availability}"
    return f'    {_id("node", node.name)}["{node.name}<br/>{detail}"]'


def render_mermaid(spec: EstateSpec, routes: Sequence[Route]) -> str:
    lines = ["flowchart LR"]
    if spec.substrate == "libvirt":
        for hv in spec.hypervisors:
            lines.append(f'  subgraph {_id("hv", hv.name)}["hypervisor {hv.name}"]')
            lines += [_node_box(n) for n in spec.nodes if n.hypervisor == hv.name]
            lines.append("  end")
    else:
        title = "docker-in-docker nodes" if spec.substrate == "docker" else "existing hosts"
        lines.append(f'  subgraph nodes["{title} on {spec.node_network.subnet}"]')
        lines += [_node_box(n) for n in spec.nodes]
        lines.append("  end")
    ((key, value),) = spec.l7.node_label.items()
    lines.append(f'  l7["L7 HAProxy ×{spec.l7.replicas}<br/>on {key}={value} nodes<br/>{spec.public_network.name}"]')
    if spec.l4.enabled:
        pair = ", ".join(n.name for n in spec.l4.nodes)
        lines.append(f'  l4["L4 HAProxy pair<br/>{pair}<br/>VIP {spec.l4.virtual_ip}"]')
        lines.append("  clients((clients)) --> l4 --> l7")
    else:
        lines.append("  clients((clients)) --> l7")
    for node in spec.l7_nodes():
        lines.append(f"  l7 -.- {_id('node', node.name)}")
    for route in routes:
        box = _id("svc", route.stack, route.service)
        names = "<br/>".join([*route.dns_names, *(f"TCP :{t.published}" for t in route.routing.tcp)])
        lines.append(f'  {box}["{route.stack}/{route.service} ×{route.replicas}<br/>{names}"]')
        lines.append(f"  l7 --> {box}")
    return "\n".join(lines) + "\n"
