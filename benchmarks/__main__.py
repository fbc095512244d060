"""``python -m benchmarks``: see ``benchmarks/runner.py`` and ``benchmarks/README.md``."""

from __future__ import annotations

from benchmarks.runner import main

raise SystemExit(main())
