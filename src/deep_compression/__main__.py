"""``python -m deep_compression`` is the same as the ``deep-compression`` command."""

from deep_compression.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
