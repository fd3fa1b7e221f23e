"""Does the linear probe read the backdoor, or the trigger's feature norm? ACC / ASR of finished runs under a linear
probe on the backbone features as they are (``eval.linear_features=raw``, the default) and L2-normalised first
(``eval.linear_features=l2``), beside the cosine kNN, which reads no norm.

    python benchmarks/linear_probe.py RUN_DIR [RUN_DIR ...] [--into docs/attacks.md]

Per run: its features embedded once and both probes fit on them (the run's seed), and the median feature norm of
the triggered test images over that of the clean ones. A run is the no-poison control when nothing was poisoned,
else it is read as its defense (``none``: undefended). Then per method and probe, the undefended run's ASR excess
over the control of the same seed, mean ± sample std over the seeds that have both. Writes ``--out`` .md and
.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.data import pin_data_root
from harness.experiment import evaluation_features, load_run, prepare_data, score_backbone
from harness.report import mean_std
from results import runs_parser, write_results

OUT = Path(__file__).with_name("linear_probe_results")
PROBES = ("raw", "l2")


def role_of(metrics: dict) -> str:
    """``control`` for a run without poison, else its defense (a post-training one's name from its block)."""
    if not metrics.get("poisoned_samples"):
        return "control" if metrics.get("defense") in (None, "none") else f"control + {metrics['defense']}"
    defense = metrics.get("defense", "none")
    return defense["name"] if isinstance(defense, dict) else str(defense)


def measure(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg, model = load_run(run_dir)
    pin_data_root(cfg)
    data = prepare_data(cfg)
    if data.attack is None:
        raise SystemExit(f"{run_dir}: trained without an attack, so it has no trigger to measure an ASR with")
    feats = evaluation_features(model.backbone, cfg, data)
    norm_ratio = (feats["triggered"].norm(dim=1).median() / feats["test"].norm(dim=1).median()).item()
    row = {"run": run_dir.name, "method": str(cfg.method.name), "seed": int(cfg.seed), "role": role_of(metrics),
           "machine": metrics.get("machine", {}).get("cpu", "?"), "norm_ratio": round(norm_ratio, 3)}
    for probe in PROBES:
        scores = score_backbone(feats, cfg, data, linear_features=probe)
        row[f"acc_linear_{probe}"], row[f"asr_linear_{probe}"] = scores["acc_linear"], scores["asr_linear"]
        row["acc_knn"], row["asr_knn"] = scores["acc_knn"], scores["asr_knn"]
    print(row, flush=True)
    return row


def excess(rows: list[dict]) -> list[dict]:
    """Per method: the undefended runs' ASR over their seed's control, under each probe and kNN."""
    out = []
    for method in sorted({r["method"] for r in rows}):
        by_seed = {(r["seed"], r["role"]): r for r in rows if r["method"] == method}
        seeds = sorted(s for s, role in by_seed if role == "none" and (s, "control") in by_seed)
        if not seeds:
            continue
        row = {"method": method, "seeds": seeds}
        for col in (*(f"asr_linear_{p}" for p in PROBES), "asr_knn"):
            diffs = [by_seed[(s, "none")][col] - by_seed[(s, "control")][col] for s in seeds]
            mean, std = mean_std(diffs)  # sample std, as the grid's tables
            row[col] = {"per_seed": [round(d, 1) for d in diffs], "mean": mean, "std": std}
        out.append(row)
    return out


def tables(rows: list[dict], summary: list[dict]) -> str:
    lines = ["| method | seed | run | ACC lin raw / l2 % | ASR lin raw / l2 % | ASR kNN % | triggered / clean "
             "feature norm |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['seed']} | {r['role']} | {r['acc_linear_raw']:.2f} / {r['acc_linear_l2']:.2f} | "
              f"{r['asr_linear_raw']:.2f} / {r['asr_linear_l2']:.2f} | {r['asr_knn']:.2f} | {r['norm_ratio']:.2f}x |"
              for r in sorted(rows, key=lambda r: (r["method"], r["seed"], r["role"]))]
    lines += ["", "| method | seeds | ASR excess over the control, linear probe on raw features | on L2-normalised "
              "features | kNN |", "|---|---|---|---|---|"]

    def cell(d: dict) -> str:
        return f"{d['mean']:+.1f} ± {d['std']:.1f} ({', '.join(f'{x:+.1f}' for x in d['per_seed'])})"
    lines += [f"| {s['method']} | {', '.join(map(str, s['seeds']))} | {cell(s['asr_linear_raw'])} | "
              f"{cell(s['asr_linear_l2'])} | {cell(s['asr_knn'])} |" for s in summary]
    return "\n".join(lines)


def main() -> None:
    args = runs_parser(__doc__, OUT).parse_args()
    rows = [measure(run) for run in args.runs]
    summary = excess(rows)
    machines = sorted({r["machine"] for r in rows})
    print(write_results(args.out, tables(rows, summary), [*rows, *summary], into=args.into,
                        note=f"Runs made on: {'; '.join(machines)}."))


if __name__ == "__main__":
    main()
