"""Real-Docker test harness: an isolated engine, an offline node image, and swarm nodes over SSH.

    from tests.harness import Engine, Lab, free_subnet
    from tools.images import busybox_image, node_image

    engine = Engine.start()                      # own dockerd, socket and data root under /tmp
    try:
        lab = Lab(engine, node_image(engine), free_subnet(), engine.root / "lab")
        m1, w1 = lab.add_nodes([("m1", "…10"), ("w1", "…20")])   # docker-in-docker nodes, sshd + dockerd
        m1.ssh("docker swarm init …")            # real SSH as root with a per-session key
        lab.load_image(busybox_image(engine))    # docker save | docker load into every node
    finally:
        engine.stop()                            # removes containers, volumes, networks, the engine

The node image is debootstrapped once and cached under ~/.cache/swarm-estate (tools/images.py).
The node containers need no --privileged: see lab.NODE_SECURITY_ARGS.
"""

from .engine import API_VERSION, Engine
from .lab import Lab, Node, free_subnet

__all__ = ["API_VERSION", "Engine", "Lab", "Node", "free_subnet"]
