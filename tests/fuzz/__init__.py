"""Fuzz targets: one per parser of ours, each run for a fixed time with hypothesis.

    python -m tests.fuzz --list
    python -m tests.fuzz html_to_text --seconds 60
    python -m tests.fuzz all --seconds 30        # every target, 30 s each

A target is a strategy of hostile inputs and a property that must hold for every one of them
(``tests.fuzz.targets``); besides its own property, no input may take longer than
``SLOW_SECONDS`` (a hang or a super-linear blow-up). A failure is shrunk to a minimal input,
printed, and ends the run with exit status 1. ``tests/unit/test_fuzz_targets.py`` runs every
target briefly in the suite, so they stay runnable.
"""
