"""Print pip constraints that pin every runtime dependency (and the demo extra's) to its floor.

``make lowest`` (and the CI job ``lowest``) installs the worker with these constraints, so a
floor that the code cannot run on fails a test instead of a user's first ``email-worker migrate``.
Each runtime dependency must have a ``>=`` floor: one without it is an error, because "the lowest
version allowed" would then be whatever the registry's oldest release is. The dev extras are
pinned with ``==`` already and are left alone.

Usage: ``python3 scripts/lowest_constraints.py [pyproject.toml] > constraints.txt``
(standard library only: it runs before any venv exists).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def floor_pin(requirement: str) -> str:
    """``"pika>=1.3,<2"`` -> ``"pika==1.3"``; raises ValueError when there is no ``>=`` floor."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    name, specifiers = match.group(1), match.group(3)
    floors = [
        spec.strip()[2:].strip() for spec in specifiers.split(",") if spec.strip().startswith(">=")
    ]
    if len(floors) != 1:
        raise ValueError(f"{name}: needs exactly one '>=' floor, has {specifiers.strip()!r}")
    return f"{name}=={floors[0]}"


def constraints(pyproject: Path) -> list[str]:
    """One ``name==floor`` line per runtime dependency of ``pyproject``, and per dependency of
    its ``demo`` extra (the lowest run ends with the demo)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    demo = project.get("optional-dependencies", {}).get("demo", [])
    return [floor_pin(requirement) for requirement in [*project["dependencies"], *demo]]


def main(argv: list[str]) -> int:
    pyproject = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    try:
        lines = constraints(pyproject)
    except ValueError as exc:
        print(f"lowest_constraints: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
