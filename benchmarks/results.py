"""Shared by the benchmark scripts: a results table written as Markdown (with the command that made it) + JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path


def write_results(out: Path, table: str, rows: list[dict], note: str = "") -> str:
    """``out``.md (machine, command, ``note``, ``table``) and ``out``.json (``rows``); returns the Markdown."""
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    md = f"Machine: {platform.machine()}, 2 cores; command: `{command}`. {note}\n\n{table}\n"
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return md


def runs_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line of a benchmark over finished run directories: ``RUN_DIR ... [--out PATH]``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished dift-pretrain run directories")
    p.add_argument("--out", type=Path, default=out, help="results path without suffix (.md and .json are written)")
    return p
