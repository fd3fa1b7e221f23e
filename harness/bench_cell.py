"""One cell of a ``dift-bench`` grid: its ``dift-pretrain`` or ``dift-defend`` command in the cell's directory.

Launched by ``dift-bench`` as ``python -m harness.bench_cell --multirun root=ROOT cell=KEY,KEY,...`` with the hydra
launcher of its command line; reads the cell from ``ROOT/plan.json``. The command runs as a subprocess (its own
process state, its output in ``cell.log``), so a failure stays in its cell; a finished cell is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.bench import Cell, finished
from harness.pretrain import write_json


class CellFailed(RuntimeError):
    pass


def run_cell(root: Path, key: str) -> None:
    plan = json.loads((root / "plan.json").read_text())
    spec = next((c for c in plan["cells"] if c["key"] == key), None)
    if spec is None:
        raise CellFailed(f"cell {key} is not in {root / 'plan.json'}")
    cell = Cell(**{**spec, "args": tuple(spec["args"]), "needs": tuple(spec["needs"])})
    out = root / key
    if finished(out, cell.phase > 0):
        print(f"[cell] {key}: finished earlier", flush=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "cell.json", spec)
    cmd = [sys.executable, "-m", *(a.format(root=root, dir=out) for a in cell.args)]
    print(f"[cell] {key}: started (follow it: tail -f {out / 'cell.log'})", flush=True)
    started = time.perf_counter()
    with (out / "cell.log").open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0 or not finished(out, cell.phase > 0):
        raise CellFailed(f"cell {key} failed (exit {rc}): see {out / 'cell.log'}")
    print(f"[cell] {key}: finished in {time.perf_counter() - started:.0f} s", flush=True)


@hydra.main(config_path="../conf", config_name="bench_cell", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_cell(Path(str(cfg.root)), str(cfg.cell))


if __name__ == "__main__":
    main()
