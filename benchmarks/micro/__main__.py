"""``python -m benchmarks.micro``: see ``benchmarks/micro/runner.py``."""

from __future__ import annotations

from benchmarks.micro.runner import main

raise SystemExit(main())
