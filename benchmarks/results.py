"""Shared by the benchmark scripts: a results table written as Markdown (with the command that made it) + JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.report import block_markers, fill_blocks, has_block


def write_results(out: Path, table: str, rows: list[dict], note: str = "", into: Sequence[Path] = ()) -> str:
    """``out``.md (machine, command, ``note``, ``table``) and ``out``.json (``rows``), and ``table`` into the
    docs ``into`` (``fill_docs``); returns the Markdown."""
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    md = f"Machine: {platform.machine()}, 2 cores; command: `{command}`. {note}\n\n{table}\n"
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    fill_docs(into, table)
    return md


def block_name() -> str:
    """The block a benchmark fills in the docs: ``<!-- NAME --> ... <!-- /NAME -->``, NAME the script's name."""
    return Path(sys.argv[0]).stem


def into_doc(path: str) -> Path:
    """An ``--into`` value: a Markdown file that has this script's block, checked when the command line is read
    (before a long measurement, not after it)."""
    doc, name = Path(path), block_name()
    if not doc.is_file():
        raise argparse.ArgumentTypeError(f"{doc}: no such file")
    if not has_block(doc.read_text(), name):
        raise argparse.ArgumentTypeError(f"{doc} has no {' ... '.join(block_markers(name))} block to fill")
    return doc


def add_into(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--into", type=into_doc, nargs="*", default=[], metavar="DOC",
                   help=f"Markdown files whose {' ... '.join(block_markers(block_name()))} block gets the "
                        "table (the docs quote it regenerated, never pasted)")
    return p


def fill_docs(docs: Sequence[Path], table: str) -> None:
    """Put ``table`` into the block named after the running script in each of ``docs`` (``into_doc`` checked
    that they have it)."""
    for doc in docs:
        fill_blocks(doc, {block_name(): table})
        print(f"{doc}: {block_markers(block_name())[0]} filled")


def runs_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line of a benchmark over finished run directories: ``RUN_DIR ... [--out PATH]``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished dift-pretrain run directories")
    p.add_argument("--out", type=Path, default=out, help="results path without suffix (.md and .json are written)")
    return add_into(p)
