"""The machine a run ran on, recorded in its ``metrics.json``: the same seed and config give other numbers on
another CPU (its kernels order floating-point sums differently), so a comparison across cells must know where
each one ran."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = ("model name", "cpu family", "model", "stepping")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """CPU model (with its family / model / stepping where the OS tells them: two "AMD EPYC" can differ), cores,
    GPU (None without CUDA) and platform."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in CPUINFO and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    ids = ", ".join(f"{k.removeprefix('cpu ')} {fields[k]}" for k in CPUINFO[1:] if k in fields)
    import torch  # here, not at import: reading a record (machine_id) needs no torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": f"{cpu} ({ids})" if ids else cpu, "cores": os.cpu_count(), "gpu": gpu,
            "platform": platform.platform()}


def machine_id(metrics: dict) -> str:
    """What a comparison needs to match: CPU and GPU of the run that wrote ``metrics`` ("unrecorded" for runs made
    before the record existed)."""
    m = metrics.get("machine")
    if not m:
        return "unrecorded"
    return m["cpu"] + (f", {m['gpu']}" if m.get("gpu") else "")
