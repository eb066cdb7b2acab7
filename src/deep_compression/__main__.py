"""``python -m deep_compression`` is the same as the ``deep-compression`` command."""

from deep_compression.cli import main

raise SystemExit(main())
