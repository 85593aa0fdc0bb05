"""What machine a benchmark ran on, for its JSON: the CPU's model name and whether it has AVX-512.

Every benchmark's figures depend on the CPU (int8 kernels most of all: ONNX Runtime's dynamic
quantization runs VNNI instructions where AVX-512 has them), so a JSON line that carries the
figures carries these too. Read from /proc/cpuinfo; elsewhere the name is `platform`'s guess
and `avx512` is None (not known).
"""

import platform
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")


def cpu() -> dict[str, Any]:
    """{"cpu": model name, "avx512": bool or None}, to merge into a benchmark's JSON object."""
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return {"cpu": platform.processor() or platform.machine() or None, "avx512": None}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)  # the last CPU's values
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or fields.get("Model") or platform.machine() or None
    flags = fields.get("flags", "").split()
    return {"cpu": name, "avx512": any(flag.startswith("avx512") for flag in flags)}
