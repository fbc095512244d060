"""Micro-benchmarks of the hand-written hot-path parts (issue 14): each measures our part and
the library that could replace it side by side, in the same process and the same run, on the
same realistic input, and checks that both produce an equivalent result. Run them with
``python -m benchmarks.micro`` (``make bench-micro``); ``benchmarks/micro/RESULTS.md`` holds the
latest figures and the verdict per part.
"""
