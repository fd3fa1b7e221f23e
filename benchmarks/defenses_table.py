"""One source run and its defenses side by side: ACC, ASR, detection and wall time per phase, from run directories.

    python benchmarks/defenses_table.py --none runs/simclr_ssl_s0 --control runs/simclr_clean_s0 \\
        --defended clp=runs/simclr_ssl_s0_clp b1=runs/simclr_ssl_s0_b1 b2=runs/simclr_ssl_s0_b2 \\
        dift=runs/simclr_ssl_dift_s0

``--none``: the undefended run the post-training defenses (``dift-defend``) started from; ``dift``: a run of the
same config and seed trained with ``defense=dift``. Writes ``--out`` .md and .json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import add_into, write_results

OUT = Path(__file__).with_name("defenses_results")


def load(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: pass finished run directories")
    return json.loads(path.read_text())


def row(name: str, m: dict) -> dict:
    """The table's numbers for one run: its metrics, detection and seconds per phase."""
    out = {"defense": name, **{k: m[k] for k in ("acc_linear", "acc_knn", "asr_linear", "asr_knn")}}
    detection = ("detected", "precision", "recall", "fpr")
    if isinstance(m.get("defense"), dict):  # dift-defend: the source run's training + the defense's phases
        d = m["defense"]
        return {**out, **{k: d.get(k) for k in detection}, "time_s": d["time_s"], "total_s": sum(d["time_s"].values())}
    # fit_time_s: all of trainer.fit; older runs only have train_time_s, which leaves out DIFT's phases
    training = m.get("fit_time_s", m["train_time_s"] + m.get("dift_time_s", 0.0))
    if "dift" in m:  # DIFT's phases run inside the training
        d = m["dift"]
        phases = {"training with DIFT": training, **{f"of which {k}": v for k, v in d["time_s"].items()}}
        return {**out, **{k: d.get(k) for k in detection}, "time_s": phases, "total_s": training}
    return {**out, "time_s": {"training": training}, "total_s": training}


def table(rows: list[dict], control: dict | None) -> str:
    lines = ["| defense | ACC lin / kNN % | ASR lin / kNN % | detected | precision / recall / FPR | seconds by phase "
             "| total s |", "|---|---|---|---|---|---|---|"]
    if control:
        lines.append(f"| no-poison control | {control['acc_linear']:.2f} / {control['acc_knn']:.2f} | "
                     f"{control['asr_linear']:.2f} / {control['asr_knn']:.2f} | | | | |")
    for r in rows:
        det = (f"{r['precision']:.3f} / {r['recall']:.3f} / {r['fpr']:.4f}" if r.get("precision") is not None
               else "")
        phases = ", ".join(f"{k} {v:.0f}" for k, v in r["time_s"].items())
        lines.append(f"| {r['defense']} | {r['acc_linear']:.2f} / {r['acc_knn']:.2f} | {r['asr_linear']:.2f} / "
                     f"{r['asr_knn']:.2f} | {'' if r.get('detected') is None else r['detected']} | {det} | {phases} | {r['total_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--none", type=Path, required=True, help="the undefended source run")
    p.add_argument("--control", type=Path, help="the no-poison control run (same config, attack.rate=0)")
    p.add_argument("--defended", nargs="+", default=[], help="NAME=RUN_DIR for each defense")
    p.add_argument("--out", type=Path, default=OUT)
    args = add_into(p).parse_args()
    rows = [row("none", load(args.none))]
    for item in args.defended:
        name, _, path = item.partition("=")
        rows.append(row(name, load(Path(path))))
    control = load(args.control) if args.control else None
    print(write_results(args.out, table(rows, control), rows,
                        "Seconds: the source run's training counts towards every post-training defense; DIFT's "
                        "phases run inside its training. The runs were not timed back to back on an idle machine "
                        "(`benchmarks/dift_cost.py` does that): read the seconds as rough.", args.into))


if __name__ == "__main__":
    main()
