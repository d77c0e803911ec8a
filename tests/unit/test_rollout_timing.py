"""An L7 rolling update behind the L4 pair, computed from the generated configs themselves.

L7 tasks update stop-first, one node at a time (host-mode ports cannot be shared). On SIGUSR1
the old HAProxy unbinds at once and drains for at most `hard-stop-after`; the L4 pair must
see the node down within that drain, and see it back up before Swarm stops the next node.
"""

from __future__ import annotations

import re

from components.units import duration_ms
from tools.synth import SynthResult


def _ms(text: str) -> int:
    return duration_ms(text if re.search(r"[a-z]$", text) else f"{text}ms")


def l4_timing(result: SynthResult) -> tuple[int, int, int, int]:
    cfg = result.files["l4/haproxy.cfg"]
    servers = re.findall(r"^\s*server \S+ \S+ check inter (\S+) rise (\d+) fall (\d+)", cfg, flags=re.M)
    assert servers, "no checked server lines in the L4 config"
    inter, rise, fall = servers[0]
    assert all(s == servers[0] for s in servers)
    (check_timeout,) = re.findall(r"^\s*timeout check (\S+)", cfg, flags=re.M)
    return _ms(inter), int(rise), int(fall), _ms(check_timeout)


def l7_timing(result: SynthResult) -> tuple[int, int, int]:
    (hard_stop,) = re.findall(r"^\s*hard-stop-after (\S+)", result.files["l7/haproxy.cfg"], flags=re.M)
    (service,) = [r for r in result.by_type("docker:index/service:Service") if r["name"].endswith("-l7-service")]
    grace = service["inputs"]["taskSpec"]["containerSpec"]["stopGracePeriod"]
    delay = service["inputs"]["updateConfig"]["delay"]
    assert service["inputs"]["updateConfig"]["order"] == "stop-first"
    return _ms(hard_stop), _ms(grace), _ms(delay)


def margins(result: SynthResult) -> tuple[int, int]:
    inter, rise, fall, check_timeout = l4_timing(result)
    hard_stop, grace, delay = l7_timing(result)
    # worst case: a check has just passed, then `fall` more intervals, the last one timing out
    down_after = inter * fall + check_timeout
    up_after = inter * rise + check_timeout
    return min(hard_stop, grace) - down_after, delay - up_after


def test_prod_l4_marks_an_updating_l7_node_down_before_it_stops_and_up_before_the_next(prod_estate, synth):
    drain_margin, delay_margin = margins(synth(prod_estate))
    assert drain_margin > 0, "the L4 pair still sends to an L7 node whose HAProxy has exited"
    assert delay_margin > 0, "the next L7 node stops before the L4 pair has put the previous one back"


def test_slow_l4_checks_break_the_inequality(prod_estate, synth):
    prod_estate["l4"]["check"] = {"inter": "5s", "rise": 3, "fall": 3}
    result = synth(prod_estate)
    drain_margin, delay_margin = margins(result)
    assert drain_margin < 0 and delay_margin < 0
    assert any("l7.update_delay" in w for w in result.warnings)
