"""``python -m schemas``: regenerate the JSON Schema files, or check them with ``--check``.

Exit status 0 when the files were written or are current; 1 with ``--check`` when any file is
stale, naming each one, so CI can refuse a model change whose published schema was not updated.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from schemas import export


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas", description="Generate the wire contracts' JSON Schema files."
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when any file is stale"
    )
    parser.add_argument(
        "--dir", type=Path, default=export.JSON_DIR, help="output directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir
    if args.check:
        outdated = export.stale(directory)
        for name in outdated:
            print(f"stale: {directory / name}", file=sys.stderr)
        if outdated:
            print("run `python -m schemas` to regenerate", file=sys.stderr)
            return 1
        print(f"{len(export.DOCUMENTS)} schema files are current")
        return 0
    for path in export.write(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
