"""What the benchmark scripts record about the machine they ran on (imported by them as
``machine``: the scripts run as ``python benchmarks/<name>.py``, so this folder is on the path).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def load_average() -> str:
    """The 1/5/15-minute load averages, ``"3.10/3.10/3.35"``: other jobs on the same cores
    slow every timing, so each result file says how busy the machine was."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
