"""``python -m schemas``: regenerate the JSON Schema files and the AsyncAPI document, or check
them with ``--check``.

Exit status 0 when the files were written or are current; 1 with ``--check`` when any file is
stale, naming each one, so CI can refuse a model change whose published schema was not updated.
``--dir`` moves the JSON Schema files only; ``--asyncapi`` names the AsyncAPI document's path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from schemas import asyncapi, export


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
    parser.add_argument(
        "--asyncapi",
        type=Path,
        default=asyncapi.ASYNCAPI_PATH,
        help="the AsyncAPI document's path (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir
    document: Path = args.asyncapi
    if args.check:
        outdated = [directory / name for name in export.stale(directory)]
        if asyncapi.is_stale(document):
            outdated.append(document)
        for path in outdated:
            print(f"stale: {path}", file=sys.stderr)
        if outdated:
            print("run `python -m schemas` to regenerate", file=sys.stderr)
            return 1
        print(f"{len(export.DOCUMENTS)} schema files and the AsyncAPI document are current")
        return 0
    for path in export.write(directory):
        print(f"wrote {path}")
    if asyncapi.write(document):
        print(f"wrote {document}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
