"""The decoder runs without torch: importing and decoding never pulls it in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deep_compression.dcz import write_dcz


def test_import_and_decode_without_torch(records, tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    write_dcz(path, records, {"model": {"name": "demo", "kwargs": {}}})
    code = (
        "import sys\n"
        "import deep_compression, deep_compression.dcz\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        f"arrays, meta = deep_compression.dcz.decode({str(path)!r})\n"
        "assert arrays['fc.weight'].shape == (40, 50)\n"
        "assert 'torch' not in sys.modules, 'decode'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
