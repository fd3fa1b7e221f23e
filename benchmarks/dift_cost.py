"""What DIFT costs: a defended run's wall time against the same run undefended, back to back on one machine.

    python benchmarks/dift_cost.py --root runs/dift_cost                  # SimCLR, CPU preset, seed 0
    python benchmarks/dift_cost.py --root runs/dift_cost --method moco -- dift.detect_every=2   # dift.* only for DIFT

Runs ``preset=cpu attack=sslbackdoor`` (plus any overrides after ``--``) without and with ``defense=dift``, one
after the other, each in a fresh directory (timings of resumed runs are not comparable), and reports
``fit_time_s`` (all of ``trainer.fit``: training, DIFT's phases, the monitor's evaluations, checkpoints) of both,
their ratio, and DIFT's seconds per phase. The monitor evaluates only the last epoch, the same work in both
runs. Run it on an otherwise idle machine: with 2 cores a second job makes both runs several times slower.
Writes ``--out`` .md and .json (appending one row per invocation, so before/after a change sit side by side).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results import add_into, fill_docs

OUT = Path(__file__).with_name("dift_cost_results")


def train(run_dir: Path, overrides: list[str]) -> dict:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "harness.pretrain", *overrides, "trainer.enable_progress_bar=false",
           "monitor.every=1000", f"hydra.run.dir={run_dir}"]
    print("running: " + " ".join(cmd[2:]), flush=True)
    with (run_dir / "pretrain.log").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="where the two run directories go")
    p.add_argument("--method", default="simclr", choices=["simclr", "moco", "byol"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="", help="what this row measures (e.g. the change being tried)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("overrides", nargs="*", help="further dift-pretrain overrides (after --)")
    args = add_into(p).parse_args()
    shared = [o for o in args.overrides if not o.startswith("dift.")]  # dift.* only reach the defended run
    base = ["preset=cpu", f"method={args.method}", f"seed={args.seed}", "attack=sslbackdoor", *shared]
    tag = f"{args.method}_s{args.seed}"
    plain = train(args.root / f"{tag}_none", base)
    defended = train(args.root / f"{tag}_dift", [*base, "defense=dift",
                                                 *[o for o in args.overrides if o.startswith("dift.")]])
    row = {"date": time.strftime("%Y-%m-%d"), "label": args.label, "method": args.method, "seed": args.seed,
           "overrides": args.overrides, "undefended_fit_s": plain["fit_time_s"], "dift_fit_s": defended["fit_time_s"],
           "ratio": round(defended["fit_time_s"] / plain["fit_time_s"], 3),
           "dift_phases_s": defended["dift"]["time_s"], "decided_epoch": defended["dift"]["decided_epoch"],
           "epochs": defended["epochs_trained"], "detected": defended["dift"]["detected"],
           "precision": defended["dift"].get("precision"), "recall": defended["dift"].get("recall")}
    rows = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").exists() else []
    rows.append(row)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| date | change | method | undefended s | DIFT s | ratio | DIFT phases s | decided at epoch | "
             "detected (precision / recall) |", "|---" * 9 + "|"]
    for r in rows:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["dift_phases_s"].items())
        lines.append(f"| {r['date']} | {r['label'] or ' '.join(r['overrides']) or 'defaults'} | {r['method']} | "
                     f"{r['undefended_fit_s']:.0f} | {r['dift_fit_s']:.0f} | {r['ratio']:.3f} | {phases} | "
                     f"{r['decided_epoch']} of {r['epochs']} | {r['detected']} ({r['precision']} / {r['recall']}) |")
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}; "
                                           "`python benchmarks/dift_cost.py` (both runs back to back, fresh "
                                           f"directories, idle machine).\n\n{table}\n")
    fill_docs(args.into, table)
    print(table)


if __name__ == "__main__":
    main()
