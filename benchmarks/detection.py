"""Time and peak memory of one DIFT detection round (DIFTDetector.fit), per stage and per kNN backend.

    python benchmarks/detection.py                       # N = 10k, 50k (d = 512) and 1M (d = 128), both backends
    python benchmarks/detection.py --sizes 10000x512 --backends exact

Each (size, backend) runs in its own process so peak memory is its own; the embeddings are synthetic
(class-like Gaussian clusters with a tight 1 % cluster). Prints a Markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
from contextlib import contextmanager
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRSS(threading.Thread):
    """Samples the process's resident memory every 5 ms; ``peak`` is the maximum since the last ``reset``."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_mib()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.005)

    def reset(self) -> float:
        peak, self.peak = self.peak, rss_mib()
        return peak


def synthetic(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, d)).astype(np.float32) * 3
    labels = rng.integers(0, 10, size=n)
    x = centers[labels] + rng.normal(size=(n, d)).astype(np.float32)
    poisoned = rng.choice(n, size=n // 100, replace=False)
    x[poisoned] = rng.normal(size=d).astype(np.float32) * 3 + 0.1 * rng.normal(size=(len(poisoned), d)).astype(np.float32)
    return x, labels


def one_round(n: int, d: int, backend: str) -> dict:
    """Run in a child process: one fit, with per-stage time and peak RSS (stages are timed by the detector)."""
    import dift_plugin.detector as detector_module
    from dift_plugin import DIFTDetector, draw_anchors

    x, labels = synthetic(n, d)
    anchors = draw_anchors(labels, 10, random_state=0)
    monitor = PeakRSS()
    monitor.start()
    base = monitor.reset()
    peaks: dict[str, float] = {}
    timed = detector_module.DIFTDetector._timed

    def timed_with_memory(self, stage):  # noqa: ANN001, ANN202
        monitor.reset()
        with timed(self, stage):
            yield
        peaks[stage] = monitor.reset()

    detector_module.DIFTDetector._timed = contextmanager(timed_with_memory)
    start = time.perf_counter()
    det = DIFTDetector(backend=backend).fit(x, *anchors)
    detected = len(det.poisoned_indexes_)  # label spreading runs when the detected set is first read
    total = time.perf_counter() - start
    monitor.running = False
    return {"n": n, "d": d, "backend": backend, "total_s": round(total, 2), "stages_s": det.timings_,
            "peak_rss_mib": {k: round(v, 0) for k, v in peaks.items()}, "baseline_rss_mib": round(base, 0),
            "detected": detected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["10000x512", "50000x512", "1000000x128"])
    parser.add_argument("--backends", nargs="+", default=["exact", "hnsw"])
    parser.add_argument("--skip", nargs="*", default=["1000000x128:exact"], help="size:backend pairs not to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/detection_results.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, backend = args.child.split(":")
        n, d = map(int, size.split("x"))
        print(json.dumps(one_round(n, d, backend)))
        return
    rows = []
    for size in args.sizes:
        for backend in args.backends:
            if f"{size}:{backend}" in args.skip:
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", f"{size}:{backend}"], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                print(f"{size} {backend} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    stages = ["density", "anchor_filter", "intersection", "spreading"]
    head = (f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
            f"python {platform.python_version()}.\n\n| N x d | backend | total s | "
            + " | ".join(f"{s} s (peak MiB)" for s in stages) + " | detected |\n|" + "---|" * (len(stages) + 4))
    lines = [head] + [
        f"| {r['n']} x {r['d']} | {r['backend']} | {r['total_s']} | "
        + " | ".join(f"{r['stages_s'][s]} ({r['peak_rss_mib'][s]:.0f})" for s in stages) + f" | {r['detected']} |"
        for r in rows]
    table = "\n".join(lines)
    print(table)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
