"""``dift-report DIR``: the tables and figures of a ``dift-bench`` grid, regenerated from its cell directories alone
(each cell's ``cell.json`` and ``metrics.json``; ``plan.json`` adds the command and the machine) into ``DIR/report/``:

- ``table1``: ACC and ASR without defense next to the no-poison control (the paper's Table 1 layout);
- ``table2``: ACC / ASR with each defense and their drops against the undefended run of the same seed, mean ± std
  over seeds, best in bold (the paper's Table 2), DIFT's ablations below;
- ``detection`` + ``fig5.png`` (DIFT's precision / recall before and after label spreading) + ``fig3.png`` (the
  intersected set's size and precision per epoch, before spreading); DIFT vs DBSCAN (B1's filter) vs OPTICS, TPR / FPR;
- ``cost``: wall time per defense and phase, and its ratio to the undefended run;
- ``clean``: the defenses run on the no-poison data (the grid's ``clean_defenses``): what each flags there and
  what it costs in ACC and time against the control;
- ``cells.csv``: every cell with its numbers and the machine it ran on; ``README.md`` linking them, with the
  environment, the cells per machine and the deviations.

A grid may be run over several sittings on different machines, and the same seed and config give other numbers on
another CPU: a row whose runs and the runs they are compared with (Table 2: the undefended run of the same seed;
Table 1: the control) come from different machines is marked ‡.

Each table is written as ``.md`` and ``.csv``. Nothing is read from memory or typed by hand: run it again on the
same directories and the files are the same.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dift_plugin.errors import DiftUserError
from harness.machine import machine_id

SCORES = ("acc_linear", "acc_knn", "asr_linear", "asr_knn")
TABLES = ("table1", "table2", "detection", "ablations", "cost", "clean")  # each written as .md and .csv
DEFENSES = ("clp", "b1", "b2", "dift")  # the paper's Table 2 columns, in its order
TRAINING_ROLES = ("none", "control")
CLEAN = "clean_"  # the prefix of a defense's role on the no-poison data (the grid's clean_defenses)
Group = tuple[str, str, str]  # data, method, attack setting


def load_cells(root: Path) -> list[dict]:
    """Every cell directory under ``root``: its ``cell.json`` with ``metrics`` (None while unfinished)."""
    cells = []
    for d in sorted(p for p in root.iterdir() if (p / "cell.json").is_file()):
        cell = json.loads((d / "cell.json").read_text())
        path = d / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else None
        if metrics is not None and cell["phase"] > 0 and not isinstance(metrics.get("defense"), dict):
            metrics = None  # B1's re-training finished, its defense block not yet written
        cells.append({**cell, "metrics": metrics})
    return cells


def by_group(cells: list[dict]) -> dict[Group, dict[str, dict[int, dict]]]:
    """(data, method, attack) -> role -> seed -> metrics, finished cells only. Two finished cells of one role and
    seed (a cell made before the grid's config or the code changed its key, beside the one made after) are refused:
    which one a table should read is not the report's guess."""
    out: dict[Group, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    keys: dict[tuple, list[str]] = defaultdict(list)
    for c in cells:
        if c["metrics"] is not None:
            out[(c["data"], c["method"], c["attack"])][c["role"]][int(c["seed"])] = c["metrics"]
            keys[(c["data"], c["method"], c["attack"], c["role"], int(c["seed"]))].append(c["key"])
    twins = [" and ".join(k) for k in keys.values() if len(k) > 1]
    if twins:
        raise DiftUserError(f"{len(twins)} run(s) finished twice under different keys: {'; '.join(twins)}. Keep the "
                            "one the grid plans today (`dift-bench ... --dry-run` lists it) and move the others out "
                            "of the grid's directory")
    return out


def pair(a: float | None, b: float | None, digits: int = 3) -> str:
    """``a / b`` (precision / recall, TPR / FPR), or a dash when either is missing."""
    return "–" if a is None or b is None else f"{a:.{digits}f} / {b:.{digits}f}"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.fmean(values), 2), round(statistics.stdev(values), 2) if len(values) > 1 else 0.0


def fmt(mean: float | None, std: float | None, n: int = 1, bold: bool = False, digits: int = 2) -> str:
    if mean is None:
        return "–"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"
    return f"**{text}**" if bold else text


def stat(rows: dict[int, dict], key: str, minus: dict[int, dict] | None = None) -> tuple[float | None, float | None]:
    """Mean ± std over seeds of ``key``; with ``minus``, of ``minus[seed][key] - rows[seed][key]`` (a drop) over
    the seeds both have."""
    if minus is None:
        return mean_std([float(m[key]) for m in rows.values() if key in m])
    return mean_std([float(minus[s][key]) - float(m[key]) for s, m in rows.items() if s in minus and key in m
                     and key in minus[s]])


def other_machine_seeds(rows: dict[int, dict], base: dict[int, dict]) -> frozenset[int]:
    """The seeds of ``rows`` that ran on another machine than ``base``'s run of the same seed (a cell that did not
    record its machine counts as its own kind): their difference mixes the defense with the machine's numerics,
    and their time ratio the defense's cost with the machines' speeds."""
    return frozenset(s for s, m in rows.items() if s in base and machine_id(m) != machine_id(base[s]))


def other_machine(rows: dict[int, dict], base: dict[int, dict]) -> int:
    return len(other_machine_seeds(rows, base))


MIXED_NOTE = ("‡ for at least one seed, this run and the one it is compared with (the undefended run; in Table 1 "
              "the control) ran on different machines, or one of them did not record its machine: the same seed "
              "and config give other numbers on another CPU, so read this difference with care. Each cell's "
              "machine: `cells.csv`.")


def with_mixed_note(lines: list[str], marked: bool) -> str:
    return "\n".join(lines + ["", MIXED_NOTE] if marked else lines)


def ablations(roles: dict[str, Any]) -> list[str]:
    return sorted(r for r in roles if r not in (*TRAINING_ROLES, *DEFENSES) and not r.startswith(("filter_", CLEAN)))


# -- tables ---------------------------------------------------------------------------------------------------------


def table1(groups: dict) -> list[dict]:
    rows = []
    for (data, method, attack), roles in sorted(groups.items()):
        none, control = roles.get("none", {}), roles.get("control", {})
        row: dict[str, Any] = {"data": data, "method": method, "attack": attack, "seeds": len(none)}
        for key in SCORES:
            row[key], row[f"{key}_std"] = stat(none, key)
            row[f"control_{key}"], row[f"control_{key}_std"] = stat(control, key)
        for key in ("asr_linear", "asr_knn"):  # the backdoor the undefended run learned, beyond the trigger alone
            row[f"{key}_excess"], row[f"{key}_excess_std"] = stat(control, key, minus=none)
        row["other_machine"] = other_machine(control, none)
        rows.append(row)
    return rows


def table1_md(rows: list[dict]) -> str:
    lines = ["| data | method | attack | seeds | ACC lin % | ACC kNN % | ASR lin % | ASR kNN % | control ACC lin % | "
             "control ASR lin % | control ASR kNN % | ASR excess lin / kNN (points) |", "|---" * 12 + "|"]
    for r in rows:
        n = r["seeds"]
        lines.append(
            f"| {r['data']} | {r['method']} | {r['attack']}{' ‡' if r['other_machine'] else ''} | {n} | {fmt(r['acc_linear'], r['acc_linear_std'], n)} | "
            f"{fmt(r['acc_knn'], r['acc_knn_std'], n)} | {fmt(r['asr_linear'], r['asr_linear_std'], n)} | "
            f"{fmt(r['asr_knn'], r['asr_knn_std'], n)} | {fmt(r['control_acc_linear'], r['control_acc_linear_std'], n)}"
            f" | {fmt(r['control_asr_linear'], r['control_asr_linear_std'], n)} | "
            f"{fmt(r['control_asr_knn'], r['control_asr_knn_std'], n)} | "
            f"{fmt(r['asr_linear_excess'], r['asr_linear_excess_std'], n)} / "
            f"{fmt(r['asr_knn_excess'], r['asr_knn_excess_std'], n)} |")
    return with_mixed_note(lines, any(r["other_machine"] for r in rows))


def table2(groups: dict) -> list[dict]:
    """Per group and defense: scores and drops against the undefended run of the same seed, mean ± std."""
    rows = []
    for (data, method, attack), roles in sorted(groups.items()):
        none = roles.get("none", {})
        for role in ("none", *DEFENSES, *ablations(roles)):
            runs = roles.get(role, {})
            if not runs:
                continue
            row: dict[str, Any] = {"data": data, "method": method, "attack": attack, "defense": role,
                                   "ablation": role in ablations(roles), "seeds": len(runs),
                                   "other_machine": other_machine(runs, none) if role != "none" else 0}
            for key in SCORES:
                row[key], row[f"{key}_std"] = stat(runs, key)
                row[f"{key}_drop"], row[f"{key}_drop_std"] = stat(runs, key, minus=none) if role != "none" else (
                    None, None)
            rows.append(row)
    return rows


def table2_md(rows: list[dict], table1_rows: list[dict]) -> str:
    excess = {(r["data"], r["method"], r["attack"]): r for r in table1_rows}
    lines = ["| data | method | attack | defense | seeds | ACC lin % | ACC drop | ASR lin % | ASR drop | ASR kNN % | "
             "ASR kNN drop |", "|---" * 11 + "|"]
    for group in sorted({(r["data"], r["method"], r["attack"]) for r in rows}):
        mine = [r for r in rows if (r["data"], r["method"], r["attack"]) == group]
        main = [r for r in mine if r["defense"] in DEFENSES]
        best = {k: (max if k.startswith("acc") else min)((r[k] for r in main if r[k] is not None), default=None)
                for k in ("acc_linear", "asr_linear", "asr_knn")}
        for r in mine:
            n = r["seeds"]
            name = (f"{r['defense']} (ablation)" if r["ablation"] else r["defense"]) + (" ‡" if r["other_machine"] else "")
            asr_lin, asr_knn = fmt(r["asr_linear"], r["asr_linear_std"], n), fmt(r["asr_knn"], r["asr_knn_std"], n)
            if r["defense"] == "none":
                t1 = excess.get(group, {})
                if t1.get("asr_linear_excess") is not None:  # was there a backdoor to remove?
                    asr_lin += f" ({t1['asr_linear_excess']:+.1f} over control)"
                    asr_knn += f" ({t1['asr_knn_excess']:+.1f} over control)"
            else:
                is_best = {k: r in main and r[k] is not None and r[k] == best[k] for k in best}
                asr_lin = fmt(r["asr_linear"], r["asr_linear_std"], n, is_best["asr_linear"])
                asr_knn = fmt(r["asr_knn"], r["asr_knn_std"], n, is_best["asr_knn"])
            acc = fmt(r["acc_linear"], r["acc_linear_std"], n,
                      r["defense"] != "none" and r in main and r["acc_linear"] == best["acc_linear"])
            lines.append(f"| {group[0]} | {group[1]} | {group[2]} | {name} | {n} | {acc} | "
                         f"{fmt(r['acc_linear_drop'], r['acc_linear_drop_std'], n)} | {asr_lin} | "
                         f"{fmt(r['asr_linear_drop'], r['asr_linear_drop_std'], n)} | {asr_knn} | "
                         f"{fmt(r['asr_knn_drop'], r['asr_knn_drop_std'], n)} |")
    return with_mixed_note(lines, any(r["other_machine"] for r in rows))


def before_spreading(dift: dict) -> tuple[float | None, float | None]:
    """Precision / recall of the stable set DIFT spread at its decision: the last epoch whose filter kept some."""
    rows = [h for h in dift.get("history", []) if h.get("kept", 0) > 0
            and (dift.get("decided_epoch") is None or h["epoch"] <= dift["decided_epoch"])]
    return (rows[-1].get("stable_precision"), rows[-1].get("stable_recall")) if rows else (None, None)


def detection(groups: dict) -> list[dict]:
    rows = []
    for (data, method, attack), roles in sorted(groups.items()):
        seeds = sorted(set().union(*(roles.get(r, {}).keys() for r in roles)))
        for seed in seeds:
            row: dict[str, Any] = {"data": data, "method": method, "attack": attack, "seed": seed}
            dift = roles.get("dift", {}).get(seed, {}).get("dift")
            if dift is not None:
                row["dift_precision_before"], row["dift_recall_before"] = before_spreading(dift)
                row.update({f"dift_{k}": dift.get(k) for k in ("precision", "recall", "fpr", "detected")})
                row["dift_decided_epoch"] = dift.get("decided_epoch")
            for name, role in (("dbscan", "b1"), *((r.removeprefix("filter_"), r) for r in roles
                                                   if r.startswith("filter_"))):
                block = roles.get(role, {}).get(seed, {}).get("defense")
                if block is not None:
                    row.update({f"{name}_tpr": block.get("recall"), f"{name}_fpr": block.get("fpr"),
                                f"{name}_precision": block.get("precision"), f"{name}_flagged": block.get("detected")})
            if len(row) > 4:
                rows.append(row)
    return rows


def detection_md(rows: list[dict]) -> str:
    algos = sorted({k.removesuffix("_tpr") for r in rows for k in r if k.endswith("_tpr")})
    head = (["data", "method", "attack", "seed", "DIFT P / R before spreading", "DIFT P / R after", "DIFT TPR / FPR",
             "DIFT detected"] + [f"{a.upper()} TPR / FPR (flagged)" for a in algos])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    for r in rows:
        cols = [r["data"], r["method"], r["attack"], str(r["seed"]),
                pair(r.get("dift_precision_before"), r.get("dift_recall_before")),
                pair(r.get("dift_precision"), r.get("dift_recall")),
                pair(r.get("dift_recall"), r.get("dift_fpr"), 4), str(r.get("dift_detected", "–"))]
        cols += [f"{pair(r.get(f'{a}_tpr'), r.get(f'{a}_fpr'), 4)} ({r.get(f'{a}_flagged', '–')})" for a in algos]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def ablation_rows(groups: dict) -> list[dict]:
    """Per group and ablation seed: what DIFT and each of its ablations detected (before / after spreading, the
    decision epoch) and what it left (ACC, ASR), each run's machine beside it."""
    rows = []
    for (data, method, attack), roles in sorted(groups.items()):
        variants = ablations(roles)
        for seed in sorted(set().union(*(roles[v].keys() for v in variants))):
            for role in ("dift", *variants):
                m = roles.get(role, {}).get(seed)
                if m is None or m.get("dift") is None:
                    continue
                dift = m["dift"]
                before = before_spreading(dift)
                rows.append({"data": data, "method": method, "attack": attack, "seed": seed, "variant": role,
                             "machine": machine_id(m), "decided_epoch": dift.get("decided_epoch"),
                             "precision_before": before[0], "recall_before": before[1],
                             **{k: dift.get(k) for k in ("detected", "precision", "recall")},
                             **{k: m.get(k) for k in ("acc_linear", "asr_linear", "asr_knn")}})
    return rows


def decided(epoch: int | None, detected: int | None) -> str:
    """DIFT's decision epoch; a decision that removed nothing is the stop epoch with no stable set."""
    return "–" if epoch is None else f"{epoch} (nothing stable)" if not detected else str(epoch)


def ablations_md(rows: list[dict]) -> str:
    lines = ["| data | method | attack | seed | variant | machine | decided at epoch | P / R before spreading | "
             "detected | P / R after | ACC lin % | ASR lin % | ASR kNN % |", "|---" * 13 + "|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['method']} | {r['attack']} | {r['seed']} | {r['variant']} | {r['machine']} | "
                     f"{decided(r['decided_epoch'], r['detected'])} | "
                     f"{pair(r['precision_before'], r['recall_before'])} | {r['detected']} | "
                     f"{pair(r['precision'], r['recall'])} | {fmt(r['acc_linear'], None)} | "
                     f"{fmt(r['asr_linear'], None)} | {fmt(r['asr_knn'], None)} |")
    if rows:
        lines += ["", "Read a variant against DIFT's row of the same seed on the same machine: the same seed and "
                      "config detect differently on another CPU (`cells.csv`)."]
    return "\n".join(lines)


def defense_block(m: dict) -> dict:
    """A run's defense results: DIFT's block, or a post-training defense's (empty for an undefended run)."""
    return m.get("dift") or (m.get("defense") if isinstance(m.get("defense"), dict) else None) or {}


def clean(groups: dict) -> list[dict]:
    """Per group and defense run on the no-poison data: what it flagged (count, share of the training set) and its
    ACC and wall time against the control of the same seed (drop: control minus defended, as in Table 2)."""
    rows = []
    for (data, method, attack), roles in sorted(groups.items()):
        for role in sorted(r for r in roles if r.startswith(CLEAN)):
            runs = roles[role]
            control = {s: m for s, m in roles.get("control", {}).items() if s in runs}  # the seeds compared
            row: dict[str, Any] = {"data": data, "method": method, "attack": attack,
                                   "defense": role.removeprefix(CLEAN), "seeds": len(runs),
                                   "other_machine": other_machine(runs, control)}
            counts = {s: defense_block(m).get("detected") for s, m in runs.items()}
            row["flagged"], row["flagged_std"] = mean_std([float(c) for c in counts.values() if c is not None])
            row["flagged_pct"], row["flagged_pct_std"] = mean_std(
                [100.0 * c / runs[s]["train_samples"] for s, c in counts.items() if c is not None])
            for key in ("acc_linear", "acc_knn"):
                row[key], row[f"{key}_std"] = stat(runs, key)
                row[f"control_{key}"], row[f"control_{key}_std"] = stat(control, key)
                row[f"{key}_drop"], row[f"{key}_drop_std"] = stat(runs, key, minus=control)
            row["ratio"], row["ratio_std"], row["ratio_seeds"] = time_ratio(runs, role, control, "control")
            rows.append(row)
    return rows


def clean_md(rows: list[dict]) -> str:
    if not rows:
        return "No defense ran on the no-poison data (the grid's `clean_defenses` is empty)."
    lines = ["| data | method | attack | defense on no-poison data | seeds | flagged | % of the training set | "
             "ACC lin % | control ACC lin % | ACC lin drop | ACC kNN drop | × control time |", "|---" * 12 + "|"]
    for r in rows:
        n = r["seeds"]
        lines.append(f"| {r['data']} | {r['method']} | {r['attack']} | {r['defense']}{' ‡' if r['other_machine'] else ''}"
                     f" | {n} | {fmt(r['flagged'], r['flagged_std'], n, digits=0)} | "
                     f"{fmt(r['flagged_pct'], r['flagged_pct_std'], n)} | {fmt(r['acc_linear'], r['acc_linear_std'], n)}"
                     f" | {fmt(r['control_acc_linear'], r['control_acc_linear_std'], n)} | "
                     f"{fmt(r['acc_linear_drop'], r['acc_linear_drop_std'], n)} | "
                     f"{fmt(r['acc_knn_drop'], r['acc_knn_drop_std'], n)} | {ratio_cell(r, 'the control')} |")
    return with_mixed_note(lines, any(r["other_machine"] for r in rows))


def seconds(m: dict, role: str) -> dict[str, float]:
    """A run's wall time by phase: post-training defenses include the source run's training; DIFT's phases run
    inside its training (listed as 'of which')."""
    if isinstance(m.get("defense"), dict):
        return {k: float(v) for k, v in m["defense"]["time_s"].items()}
    training = float(m.get("fit_time_s", m.get("train_time_s", 0.0)))
    if "dift" in m:
        return {"training": training, **{f"of which {k}": float(v) for k, v in m["dift"]["time_s"].items()}}
    return {"training": training}


def total(phases: dict[str, float]) -> float:
    return sum(v for k, v in phases.items() if not k.startswith("of which"))


def time_ratio(runs: dict[int, dict], role: str, base: dict[int, dict],
               base_role: str) -> tuple[float | None, float | None, int]:
    """Mean ± std of each run's total wall time over ``base``'s run of the same seed, and how many seeds it is
    over: those both have, but a seed where either run was resumed (its seconds cover its last session only) or
    the two ran on different machines (their seconds are not comparable)."""
    skip = other_machine_seeds(runs, base) | {s for s, m in runs.items()
                                              if s in base and (m.get("resumed") or base[s].get("resumed"))}
    ratios = [round(total(seconds(m, role)) / total(seconds(base[s], base_role)), 4)
              for s, m in runs.items() if s in base and s not in skip]
    return (*mean_std(ratios), len(ratios))


def cost(groups: dict) -> list[dict]:
    rows = []
    for (data, method, attack), roles in sorted(groups.items()):
        none = roles.get("none", {})
        for role in ("none", *DEFENSES, *ablations(roles), *sorted(r for r in roles if r.startswith("filter_"))):
            runs = roles.get(role, {})
            if not runs:
                continue
            per_seed = {s: seconds(m, role) for s, m in runs.items()}
            phases = list(dict.fromkeys(k for p in per_seed.values() for k in p))  # in the order the runs list them
            row: dict[str, Any] = {"data": data, "method": method, "attack": attack, "defense": role,
                                   "seeds": len(runs)}
            for k in phases:
                row[f"{k} s"] = mean_std([p[k] for p in per_seed.values() if k in p])[0]
            row["total_s"], row["total_s_std"] = mean_std([total(p) for p in per_seed.values()])
            # a resumed run's fit_time_s covers only its last session (a post-training defense counts its source's):
            # such runs are marked, and time_ratio leaves out a seed where either run of the pair was resumed
            source_resumed = {s for s in runs if none.get(s, {}).get("resumed")}
            row["resumed_runs"] = sum(bool(m.get("resumed")) or (isinstance(m.get("defense"), dict) and s in
                                                                 source_resumed) for s, m in runs.items())
            row["ratio"], row["ratio_std"], row["ratio_seeds"] = time_ratio(runs, role, none, "none")
            rows.append(row)
    return rows


def cost_md(rows: list[dict]) -> str:
    lines = ["| data | method | attack | defense | seeds | seconds by phase (mean) | total s | × undefended |",
             "|---" * 8 + "|"]
    for r in rows:
        phases = ", ".join(f"{k.removesuffix(' s')} {v:.0f}" for k, v in r.items() if k.endswith(" s"))
        resumed = [f"{r['resumed_runs']} resumed: seconds of the last session only"] if r["resumed_runs"] else []
        lines.append(f"| {r['data']} | {r['method']} | {r['attack']} | {r['defense']} | {r['seeds']} | {phases} | "
                     f"{fmt(r['total_s'], r['total_s_std'], r['seeds'], digits=0)} | "
                     f"{ratio_cell(r, 'the undefended one', resumed)} |")
    return "\n".join(lines)


def ratio_cell(r: dict, base: str, notes: list[str] | None = None) -> str:
    """A time ratio, with the seeds it leaves out said: a resumed run's seconds cover its last session only, and
    two machines' seconds are not comparable."""
    notes = list(notes or [])
    ratio = fmt(r["ratio"], r["ratio_std"], r["ratio_seeds"], digits=3)
    if r["ratio_seeds"] < r["seeds"]:
        notes.append(f"ratio over {r['ratio_seeds']} of {r['seeds']} seeds: without resumed runs or runs on "
                     f"another machine than {base}")
    return ratio + (f" ({'; '.join(notes)})" if notes else "")


# -- figures --------------------------------------------------------------------------------------------------------


def fig5(rows: list[dict], path: Path) -> None:
    """DIFT's precision and recall before and after label spreading, per setting (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["data"], r["method"], r["attack"]) for r in rows if r.get("dift_precision") is not None})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(settings) + 1), 3.2))
    bars = (("dift_precision_before", "precision before"), ("dift_precision", "precision after"),
            ("dift_recall_before", "recall before"), ("dift_recall", "recall after"))
    for j, (key, label) in enumerate(bars):
        means = []
        for s in settings:
            vals = [r[key] for r in rows if (r["data"], r["method"], r["attack"]) == s and r.get(key) is not None]
            means.append(statistics.fmean(vals) if vals else 0.0)
        ax.bar([i + (j - 1.5) * 0.2 for i in range(len(settings))], means, 0.2, label=label)
    ax.set_xticks(range(len(settings)), [" ".join(s[1:]) for s in settings], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    ax.set_title("DIFT detection before / after label spreading (Figure 5)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig3(groups: dict, path: Path) -> None:
    """The intersected set's size and precision per epoch, before label spreading, one panel per setting, one line
    per seed (the paper's Figure 3: "Precision and detected sample number before label spreading")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(g, roles["dift"]) for g, roles in sorted(groups.items()) if roles.get("dift")]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.2), squeeze=False)
    for ax, (group, runs) in zip(axes[0], panels):
        twin = ax.twinx()
        for seed, m in sorted(runs.items()):
            hist = m["dift"].get("history", [])
            epochs = [h["epoch"] for h in hist]
            ax.plot(epochs, [h.get("stable", 0) for h in hist], label=f"size, seed {seed}")
            twin.plot(epochs, [h.get("stable_precision", 0) for h in hist], "--", label=f"precision, seed {seed}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("samples in the intersected set")
        twin.set_ylabel("precision (dashed)")
        twin.set_ylim(0, 1.05)
        ax.set_title(" ".join(group), fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("DIFT's intersected set per epoch, before label spreading (Figure 3)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- files ----------------------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)


def cell_rows(cells: list[dict]) -> list[dict]:
    rows = []
    for c in cells:
        m = c["metrics"] or {}
        det = defense_block(m)
        rows.append({"key": c["key"], "phase": c["phase"] + 1, "role": c["role"], "data": c["data"],
                     "method": c["method"], "attack": c["attack"], "seed": c["seed"],
                     "status": "finished" if c["metrics"] is not None else "unfinished",
                     "machine": machine_id(m) if m else None,
                     **{k: m.get(k) for k in SCORES}, "detected": det.get("detected"),
                     "precision": det.get("precision"), "recall": det.get("recall"), "fpr": det.get("fpr"),
                     "total_s": round(total(seconds(m, c["role"])), 1) if m else None})
    return rows


def readme(root: Path, plan: dict, tables: dict[str, str], cells: list[dict]) -> str:
    bench = plan.get("bench", {})
    env = plan.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    finished = sum(c["metrics"] is not None for c in cells)
    launcher = " ".join(plan.get("launcher", [])) or "hydra's basic launcher (one cell after the other)"
    lines = [f"# dift-bench `{bench.get('name', root.name)}`: {bench.get('description', '')}", "",
             f"Regenerated by `dift-report {root}` from the cell directories; grid run by `{plan.get('command', '?')}`"
             f" with {launcher}. Cells finished: {finished} of {len(cells)} (`cells.csv`).", "",
             f"Last run on: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, GPU: {env.get('gpu') or 'none'}; "
             f"{env.get('platform', '')}. Versions: {versions}.", "",
             "Cells by machine: " + "; ".join(f"{name}: {n}" for name, n in Counter(
                 machine_id(c["metrics"]) for c in cells if c["metrics"] is not None).most_common()) + ".", "",
             "Files: " + ", ".join(f"[{t}.md]({t}.md) / [.csv]({t}.csv)" for t in TABLES)
             + ", [fig3.png](fig3.png), [fig5.png](fig5.png), [cells.csv](cells.csv).", ""]
    if bench.get("deviations"):
        lines += ["## Deviations from the paper's setting", "", *[f"- {d}" for d in bench["deviations"]], ""]
    if any(k in launcher for k in ("joblib", "submitit")):
        lines += ["Cells ran in parallel: read the seconds in the cost table as rough.", ""]
    titles = {"table1": "Table 1: without defense, beside the no-poison control",
              "table2": "Table 2: defenses (drops in points against the undefended run of the same seed)",
              "detection": "Detection (TPR = recall against the true poisoned samples)",
              "ablations": "DIFT's ablations: what each variant detected and left",
              "cost": "Cost (post-training defenses include the source run's training)",
              "clean": "On clean data: the defenses run on the no-poison data, against the control of the same seed"}
    for name, title in titles.items():
        lines += [f"## {title}", "", tables[name], ""]
    return "\n".join(lines)


def write_report(root: Path) -> Path:
    """Every report of the grid in ``root`` into ``root/report``; returns that directory."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory: pass the root of a dift-bench grid")
    cells = load_cells(root)
    if not cells:
        raise FileNotFoundError(f"no cells under {root} (no */cell.json): run dift-bench first")
    plan = json.loads((root / "plan.json").read_text()) if (root / "plan.json").exists() else {}
    groups = by_group(cells)
    out = root / "report"
    out.mkdir(exist_ok=True)
    t1, t2, det, abl = table1(groups), table2(groups), detection(groups), ablation_rows(groups)
    cst, cln = cost(groups), clean(groups)
    tables = {"table1": table1_md(t1), "table2": table2_md(t2, t1), "detection": detection_md(det),
              "ablations": ablations_md(abl), "cost": cost_md(cst), "clean": clean_md(cln)}
    for name, rows in zip(TABLES, (t1, t2, det, abl, cst, cln)):
        write_csv(out / f"{name}.csv", rows)
        (out / f"{name}.md").write_text(tables[name] + "\n")
    write_csv(out / "cells.csv", cell_rows(cells))
    fig5(det, out / "fig5.png")
    fig3(groups, out / "fig3.png")
    (out / "README.md").write_text(readme(root, plan, tables, cells))
    return out


def block_markers(name: str) -> tuple[str, str]:
    """The Markdown comments that open and close a regenerated block NAME of a doc."""
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def has_block(text: str, name: str) -> bool:
    return all(marker in text for marker in block_markers(name))


def fill_blocks(doc: Path, blocks: Mapping[str, str]) -> int:
    """Replace each block ``<!-- NAME -->...<!-- /NAME -->`` of ``doc`` whose NAME is a key of ``blocks`` with its
    text; returns how many were filled. Keeps the docs' tables regenerated, never pasted."""
    text = doc.read_text()
    filled = 0
    for name, body in blocks.items():
        start, end = block_markers(name)
        if has_block(text, name):
            head, rest = text.split(start, 1)
            text = f"{head}{start}\n{body.rstrip()}\n{end}{rest.split(end, 1)[1]}"
            filled += 1
    doc.write_text(text)
    return filled


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="dift-report", description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="the directory of a dift-bench grid (its root=...)")
    p.add_argument("--into", type=Path, nargs="*", default=[],
                   help="Markdown files whose <!-- GRID:table2 --> ... <!-- /GRID:table2 --> blocks (GRID: the "
                        "grid's name; also table1, detection, ablations, cost, clean) get the regenerated tables")
    args = p.parse_args(argv)
    try:
        out = write_report(args.root)
    except (FileNotFoundError, DiftUserError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    grid = json.loads((args.root / "plan.json").read_text())["bench"]["name"] if (args.root / "plan.json").exists() \
        else args.root.name
    for doc in args.into:
        blocks = {f"{grid}:{name}": (out / f"{name}.md").read_text() for name in TABLES}
        print(f"{doc}: {fill_blocks(doc, blocks)} block(s) of {grid} filled")
    print(f"report: {out / 'README.md'}")


if __name__ == "__main__":
    main()
