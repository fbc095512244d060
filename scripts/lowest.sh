#!/usr/bin/env bash
# Install the lowest versions pyproject.toml allows (every runtime dependency pinned to its `>=`
# floor by scripts/lowest_constraints.py; the dev tools as pinned) into a separate venv, then run
# the unit tests and the demo (`email-worker migrate` + `email-worker demo`) on them.
# A floor the code cannot run on fails here instead of at a user's first start.
# Usage: scripts/lowest.sh (or `make lowest`); LOWEST_VENV and PY override the venv and python.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VENV=${LOWEST_VENV:-.venv-lowest}

"$PY" -m venv --clear "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$PY" scripts/lowest_constraints.py pyproject.toml >"$VENV/constraints.txt"
echo "lowest: installing with these pins:"
sed 's/^/  /' "$VENV/constraints.txt"
"$VENV/bin/pip" install --quiet -c "$VENV/constraints.txt" -e '.[dev]'

# Prove the pins took: every installed runtime dependency is exactly its floor.
"$VENV/bin/python" - "$VENV/constraints.txt" <<'PY'
import sys
from importlib.metadata import version

from packaging.utils import canonicalize_name
from packaging.version import Version

wrong = []
for line in open(sys.argv[1], encoding="utf-8").read().split():
    name, floor = line.split("==")
    installed = version(canonicalize_name(name))
    if Version(installed) != Version(floor):
        wrong.append(f"{name}: installed {installed}, floor {floor}")
if wrong:
    sys.exit("lowest: not installed at the floor: " + "; ".join(wrong))
print("lowest: every runtime dependency is installed at its floor")
PY

"$VENV/bin/pytest" -q -p no:cacheprovider tests/unit
"$VENV/bin/email-worker" migrate
"$VENV/bin/email-worker" demo
echo "lowest: unit tests and demo passed at the lowest allowed versions"
