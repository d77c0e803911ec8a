"""Pure functions from the model to the text a host or a tool consumes, each checked by that tool in the tests.

    l7.py          the L7 HAProxy config (haproxy -c)
    l4.py          the L4 HAProxy and keepalived configs (haproxy -c, keepalived -t)
    cloudinit.py   cloud-init user data and the bootstrap of existing hosts (cloud-init schema, nft -c)
    compose.py     a stack as it will run, as a compose file (docker stack config)
    diagram.py     the estate as a mermaid picture
"""
