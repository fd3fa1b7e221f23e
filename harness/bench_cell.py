"""One cell of a ``dift-bench`` grid: its ``dift-pretrain`` or ``dift-defend`` command in the cell's directory.

Launched by ``dift-bench`` as ``python -m harness.bench_cell --multirun root=ROOT cell=KEY,KEY,...`` with the hydra
launcher of its command line; reads the cell from ``ROOT/plan.json``. The command runs as a subprocess (its own
process state, its output in ``cell.log``), so a failure stays in its cell; a finished cell is skipped. A cell is
run by one process at a time (``cell.lock``: its pid and host): a second ``dift-bench`` over the same root leaves a
cell that a live process is running alone, and stopping a cell's process (SIGTERM) stops its command too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    with locked(out / "cell.lock", key):
        write_json(out / "cell.json", spec)
        cmd = [sys.executable, "-m", *(a.format(root=root, dir=out) for a in cell.args)]
        print(f"[cell] {key}: started (follow it: tail -f {out / 'cell.log'})", flush=True)
        started = time.perf_counter()
        with (out / "cell.log").open("a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            rc = run_to_the_end(cmd, log)
    if rc != 0 or not finished(out, cell.phase > 0):
        raise CellFailed(f"cell {key} failed (exit {rc}): see {out / 'cell.log'}")
    print(f"[cell] {key}: finished in {time.perf_counter() - started:.0f} s", flush=True)


@contextmanager
def locked(path: Path, key: str) -> Iterator[None]:
    """Hold ``path`` (pid and host) while the cell runs; refuse a cell that a live process holds. A lock left by a
    process that is gone (on this host) is taken over."""
    me = f"{os.getpid()} {socket.gethostname()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid, _, host = path.read_text().partition(" ")
            if host.strip() != socket.gethostname():
                raise CellFailed(f"cell {key} is held by process {pid} on host {host.strip()} ({path}); if that run "
                                 "is gone, delete the lock and run again") from None
            if pid.isdigit() and _alive(int(pid)):
                raise CellFailed(f"cell {key} is being run by process {pid} on this host: wait for it, or stop it "
                                 f"(kill {pid}) and run again") from None
            path.unlink(missing_ok=True)  # its process is gone
    with os.fdopen(fd, "w") as f:
        f.write(me)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def run_to_the_end(cmd: list[str], log) -> int:  # noqa: ANN001 - an open text file
    """Run ``cmd`` with its output in ``log``. A SIGTERM to this process (or Ctrl-C) terminates the command first
    (no orphan left training in the cell's directory), then ends this process as SIGTERM would."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    main = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


@hydra.main(config_path="../conf", config_name="bench_cell", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_cell(Path(str(cfg.root)), str(cfg.cell))


if __name__ == "__main__":
    main()
