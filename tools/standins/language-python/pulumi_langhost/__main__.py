"""Entry point: ``python -m pulumi_langhost [flags] [ENGINE_ADDRESS]`` (what the generated launcher runs)."""

import sys

from pulumi_langhost.server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
