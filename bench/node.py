"""The one-node test cluster's costs: set-up steps (cold when their cache is empty, warm when it is
full), the cluster's start-up and a pod's start on it, with the machine's load beside them.

    .venv/bin/python bench/node.py            # warm figures; builds nothing that is missing
    .venv/bin/python bench/node.py --cold     # empties the node and image caches first (slow)

Last line: name=value pairs (seconds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # last: the repository's `operator/` must never shadow the stdlib module

from tests.fixtures.cluster import wait_for  # noqa: E402
from tests.fixtures.node import CACHE, start_node  # noqa: E402


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="empty ~/.cache/negrl/{node,images} first")
    args = parser.parse_args()
    if args.cold:
        for folder in ("node", "images"):
            shutil.rmtree(CACHE / folder, ignore_errors=True)
    figures = {
        "node_build_s": timed(["bash", "tools/node/build.sh"]),
        "images_s": timed(["bash", "tools/node/images.sh"]),
    }
    start = time.monotonic()
    node, cluster = start_node(("operator",))
    try:
        figures["cluster_up_s"] = time.monotonic() - start
        image = cluster.images["operator"]
        start = time.monotonic()
        cluster.kubectl("run", "bench", "--image", image, "--image-pull-policy=Never", "--restart=Never",
                        "--command", "--", "negrl", "--help")
        wait_for("the pod to finish", lambda: cluster.kubectl("get", "pod", "bench", "-o",
                                                              "jsonpath={.status.phase}").stdout,
                 lambda phase: phase in ("Succeeded", "Failed"), timeout=120)
        figures["pod_run_s"] = time.monotonic() - start
    finally:
        start = time.monotonic()
        left = node.stop()
        figures["cluster_down_s"] = time.monotonic() - start
    assert not left, left
    load = os.getloadavg()[0]
    print(" ".join(f"{name}={value:.1f}" for name, value in figures.items()) + f" load1={load:.1f} cores={os.cpu_count()}")


if __name__ == "__main__":
    main()
