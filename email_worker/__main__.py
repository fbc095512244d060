"""``python -m email_worker`` is the ``email-worker`` console script."""

from email_worker.cli import main

raise SystemExit(main())
