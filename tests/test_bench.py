"""dift-bench (the grid, on hydra launchers) and dift-report (tables and figures from the cell directories)."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dift_plugin.errors import DiftUserError
from harness.bench import load_bench, plan
from harness.config import CONF_DIR
from tests.conftest import REPO

REPORT_FILES = [f"{t}.{ext}" for t in ("table1", "table2", "detection", "ablations", "cost", "clean") for ext in ("md", "csv")] + [
    "fig3.png", "fig5.png", "cells.csv", "README.md"]


def bench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.bench", *args], capture_output=True, text=True, cwd=cwd)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(value):
    return None if value in ("", None) else float(value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_root):
    """bench=cpu-smoke run to the end with the joblib launcher and 2 workers."""
    root = tmp_path_factory.mktemp("bench") / "smoke"
    args = ("bench=cpu-smoke", f"root={root}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    result = bench(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, args


def test_smoke_grid_writes_every_report_with_numbers_in_range(smoke):
    root, _ = smoke
    out = root / "report"
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    cells = rows(out / "cells.csv")
    assert cells and all(c["status"] == "finished" for c in cells)
    assert {c["role"] for c in cells} == {"none", "control", "dift", "dift_no_spreading", "dift_no_finetune",
                                          "dift_paper_spreading", "clp", "b1", "b2", "filter_optics",
                                          "clean_dift", "clean_b1"}
    for table in ("table1", "table2", "cells"):
        for r in rows(out / f"{table}.csv"):
            for key in ("acc_linear", "acc_knn", "asr_linear", "asr_knn"):
                if num(r.get(key)) is not None:
                    assert 0 <= num(r[key]) <= 100, (table, key, r[key])
    # each drop is the mean over seeds of (undefended - defended), run by run
    by = {(c["role"], int(c["seed"])): c for c in cells}
    t2 = rows(out / "table2.csv")
    assert {r["defense"] for r in t2} >= {"none", "clp", "b1", "b2", "dift"}
    for r in t2:
        if r["defense"] == "none":
            continue
        seeds = [s for (role, s) in by if role == r["defense"]]
        assert int(r["seeds"]) == len(seeds)
        for key in ("acc_linear", "asr_linear", "asr_knn"):
            drops = [num(by[("none", s)][key]) - num(by[(r["defense"], s)][key]) for s in seeds]
            assert num(r[f"{key}_drop"]) == pytest.approx(sum(drops) / len(drops), abs=0.011), (r["defense"], key)
    t1 = rows(out / "table1.csv")[0]
    excess = [num(by[("none", s)]["asr_linear"]) - num(by[("control", s)]["asr_linear"]) for s in (0, 1)]
    assert num(t1["asr_linear_excess"]) == pytest.approx(sum(excess) / 2, abs=0.011)
    # the defenses on the no-poison data: what they flagged, their ACC against the control of the same seed
    clean = {r["defense"]: r for r in rows(out / "clean.csv")}
    assert set(clean) == {"dift", "b1"} and all(int(r["seeds"]) == 2 for r in clean.values())
    for name, r in clean.items():
        runs = [(by[(f"clean_{name}", s)], by[("control", s)]) for s in (0, 1)]
        assert num(r["flagged"]) == pytest.approx(sum(num(c["detected"]) for c, _ in runs) / 2, abs=0.011)
        assert num(r["flagged_pct"]) == pytest.approx(num(r["flagged"]) / 512 * 100, abs=0.011)
        drop = sum(num(ctl["acc_linear"]) - num(c["acc_linear"]) for c, ctl in runs) / 2
        assert num(r["acc_linear_drop"]) == pytest.approx(drop, abs=0.011)
        assert all(num(c["precision"]) in (None, 0) for c, _ in runs)  # nothing poisoned there to find
    assert not any(r["defense"].startswith("clean_") for r in rows(out / "table2.csv") + rows(out / "cost.csv"))
    assert {(r["variant"], r["seed"]) for r in rows(out / "ablations.csv")} == {
        (v, "0") for v in ("dift", "dift_no_spreading", "dift_no_finetune", "dift_paper_spreading")}
    det = rows(out / "detection.csv")
    assert {"dift_precision", "dbscan_tpr", "optics_tpr"} <= set(det[0])
    assert "cpu-smoke" in (out / "README.md").read_text() and "hydra/launcher=joblib" in (out / "README.md").read_text()
    assert all(c["machine"] not in ("", "unrecorded") for c in cells)  # every cell says where it ran
    assert "‡" not in (out / "table2.md").read_text()  # one machine: nothing marked as mixed
    logs = [(root / c["key"] / "cell.log").read_text() for c in cells]
    assert all("it/s" not in log for log in logs)  # no progress bar in the files: a line per step otherwise


def test_a_second_run_recomputes_nothing_and_regenerates_identical_tables(smoke):
    root, args = smoke
    out = root / "report"
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}
    before = {name: (out / name).read_bytes() for name in REPORT_FILES if not name.endswith(".png")}
    result = bench(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 to run" in result.stdout and "to run" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")} == stamps
    assert {name: (out / name).read_bytes() for name in before} == before


def test_cells_carried_without_weights_are_run_again_for_the_defenses_still_to_run(smoke, tmp_path):
    # the light files of a grid carried to another machine (metrics, configs; no checkpoints): a defense that has
    # not run yet needs its source's weights, so the source runs again, seeded, to the same numbers
    root = tmp_path / "carried"
    shutil.copytree(smoke[0], root)
    for ckpt in root.glob("*/checkpoints"):
        shutil.rmtree(ckpt)
    role = {p.parent.name: (json.loads(p.read_text())["role"], json.loads(p.read_text())["seed"])
            for p in root.glob("*/cell.json")}
    key = {v: k for k, v in role.items()}
    (root / key[("b2", 0)] / "metrics.json").unlink()
    result = bench(*(a for a in smoke[1] if not a.startswith("root=")), f"root={root}")  # the fixture's launcher:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]  # its thread count, float order
    assert "2 finished cell(s) run again" in result.stdout
    for again in (key[("b1", 0)], key[("none", 0)]):  # B2 defends B1's run, which defends the undefended one
        old, new = (json.loads((root / again / f"metrics{s}.json").read_text()) for s in (".stale", ""))
        for k in ("acc_linear", "acc_knn", "asr_linear", "asr_knn"):  # seeded, on the same launcher: the same
            assert new[k] == pytest.approx(old[k], abs=1.0), (again, k)  # numbers up to float order
    assert "defense" in json.loads((root / key[("b2", 0)] / "metrics.json").read_text())
    assert not (root / key[("none", 1)] / "metrics.stale.json").exists()  # nothing left to defend there


def test_a_failing_cell_is_reported_and_the_others_finish(smoke, tmp_path):
    # the smoke grid's seed 0 (its cells are finished: copied) with one more cell, which fails inside its run
    grid = yaml.safe_load((CONF_DIR / "bench" / "cpu-smoke.yaml").read_text())
    grid.update(name="broken", seeds=[0], control=False, defenses=["clp"], detection=[], ablation_seeds=None,
                clean_defenses=[],
                ablations={"dift_broken": ["dift.detector.k=100000"]})  # composes; fails inside the run
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(grid))
    shutil.copytree(smoke[0], tmp_path / "grid")
    result = bench(f"bench={path}", f"root={tmp_path / 'grid'}")
    assert result.returncode == 1
    assert "1 cell(s) failed" in result.stderr and "dift_broken" in result.stderr
    assert "2 cells, 1 finished earlier, 1 to run" in result.stdout  # finished cells skipped, whichever grid ran them
    cells = {(c["role"], c["seed"]): c["status"] for c in rows(tmp_path / "grid" / "report" / "cells.csv")}
    assert cells[("none", "0")] == cells[("clp", "0")] == "finished"  # the report reads every cell on disk
    assert {k: v for k, v in cells.items() if v != "finished"} == {("dift_broken", "0"): "unfinished"}


def test_cells_are_keyed_by_their_config_and_bad_grids_are_refused_early():
    grid = load_bench("cpu-smoke", [])
    cells = plan(grid)
    again = plan(load_bench("cpu-smoke", []))
    assert [c.key for c in cells] == [c.key for c in again]
    with pytest.raises(DiftUserError, match="bench.trainer: not a grid key"):
        load_bench("cpu-smoke", ["trainer.max_epochs=5"])
    longer = plan(load_bench("cpu-smoke", ["base=[preset=cpu,trainer.max_epochs=5]"]))
    assert not {c.key for c in longer} & {c.key for c in cells}
    quiet = load_bench("cpu-smoke", [])  # what a run prints is not part of its key
    quiet.base = [*quiet.base, "monitor.every=3", "trainer.enable_progress_bar=false"]
    assert [c.key for c in plan(quiet)] == [c.key for c in cells]
    assert len({c.key for c in cells}) == len(cells)
    b2 = next(c for c in cells if c.role == "b2")
    b1 = next(c for c in cells if c.role == "b1" and c.seed == b2.seed)
    assert b2.phase == 2 and b1.key in b2.needs
    with pytest.raises(DiftUserError, match="cell simclr/sslbackdoor/none/seed 0"):
        plan(load_bench("cpu-smoke", ["base=[preset=cpu,optimizer.nosuch=1]"]))
    with pytest.raises(DiftUserError, match="unknown defenses"):
        load_bench("cpu-smoke", ["defenses=[dbscan]"])
    with pytest.raises(DiftUserError, match="no such grid"):
        load_bench("nosuch", [])


def test_keys_added_later_leave_finished_cells_their_keys_at_their_default(data_root):
    # Committed cells of benchmarks/grids/cpu: a key added since (harness.config.ADDED_AT_DEFAULT) must
    # not re-key them while it holds the value that trains what they trained; another value is another cell.
    def keys(*attack_overrides, method="byol"):
        attack = {"name": "sslbackdoor", "overrides": list(attack_overrides), "ablations": False}
        grid = load_bench("cpu", [f"methods=[{method}]", "seeds=[0]", "defenses=[]", "clean_defenses=[]"])
        grid.attacks = [attack]
        return {c.role: c.key for c in plan(grid)}

    assert keys()["none"] == "cifar10_byol_sslbackdoor_none_s0-a55b97e1"
    assert keys(method="simclr")["control"] == "cifar10_simclr_sslbackdoor_control_s0-fa8ec123"
    assert keys("attack.params.opacity=1.0", "method.predictor=mlp", "eval.linear_features=raw") == keys()
    assert keys("attack.params.opacity=0.5")["none"] != keys()["none"]
    assert keys("method.predictor=linear")["none"] != keys()["none"]
    assert keys("eval.linear_features=l2")["none"] != keys()["none"]


def test_the_cpu_grid_plans_exactly_its_committed_cells():
    # the CPU recipe's probe changed after the grid ran (eval.linear_features=l2); the grid keeps the probe its cells
    # were made with, so a sitting of `dift-bench bench=cpu` finds every cell finished instead of re-making them
    committed = {p.name for p in (REPO / "benchmarks" / "grids" / "cpu").iterdir() if (p / "cell.json").is_file()}
    assert len(committed) == 108
    assert {c.key for c in plan(load_bench("cpu", []))} == committed


def test_an_attack_setting_may_narrow_the_seeds_and_leave_out_the_ablations(tmp_path):
    # the cpu grid's paper-setting rows: one seed, no ablations, every defense and the control
    grid = yaml.safe_load((CONF_DIR / "bench" / "cpu-smoke.yaml").read_text())
    grid["attacks"].append({"name": "sslbackdoor", "label": "small", "overrides": ["attack.rate=0.05"],
                            "seeds": [1], "ablations": False})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    cells = plan(load_bench(str(path), []))
    small = {(c.role, c.seed) for c in cells if c.attack == "small"}
    assert small == {(r, 1) for r in ("none", "control", "dift", "clp", "b1", "b2", "filter_optics", "clean_dift",
                                      "clean_b1")}
    main = {(c.role, c.seed) for c in cells if c.attack == "sslbackdoor"}
    assert {s for _, s in main} == {0, 1} and ("dift_no_spreading", 0) in main
    grid["attacks"][1]["seed"] = [0]
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(DiftUserError, match="attack setting small: unknown key seed"):
        load_bench(str(path), [])
    grid["attacks"][1] = {"label": "nameless"}
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(DiftUserError, match="needs a name"):
        load_bench(str(path), [])


def test_clean_defenses_run_dift_on_the_no_poison_data_and_the_others_on_the_control():
    cells = plan(load_bench("cpu-smoke", ["seeds=[0]", "clean_defenses=[dift,clp,b1,b2]"]))
    role = {c.role: c for c in cells}
    assert "attack.rate=0" in role["clean_dift"].args and "defense=dift" in role["clean_dift"].args
    assert role["clean_dift"].phase == 0 and role["clean_dift"].key != role["control"].key
    for name in ("clean_clp", "clean_b1"):
        assert role[name].source == role["control"].key and role[name].phase == 1
    assert role["clean_b2"].needs == (role["control"].key, role["clean_b1"].key)
    assert role["b2"].needs == (role["none"].key, role["b1"].key)  # the attacked run's chain is untouched
    assert "clean_filter_optics" not in role
    before = {c.role: c.key for c in plan(load_bench("cpu-smoke", ["seeds=[0]", "clean_defenses=[]"]))}
    assert all(role[r].key == k for r, k in before.items())  # adding clean cells re-keys nothing
    with pytest.raises(DiftUserError, match="set control: true"):
        load_bench("cpu-smoke", ["control=false"])
    with pytest.raises(DiftUserError, match="unknown clean_defenses"):
        load_bench("cpu-smoke", ["clean_defenses=[optics]"])
    with pytest.raises(DiftUserError, match="list b1 in `clean_defenses` too"):
        load_bench("cpu-smoke", ["clean_defenses=[b2]"])


def test_unknown_bench_keys_are_refused():
    result = bench("bench=cpu-smoke", "trainer.max_epochs=5", "--dry-run")
    assert result.returncode == 2 and "unknown argument" in result.stderr


def test_the_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="bench_cell", return_hydra_config=True,
                      overrides=["root=/tmp/grid", "cell=a", "hydra/launcher=submitit_slurm",
                                 "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"
    assert Path(cfg.hydra.sweep.dir) == Path("/tmp/grid")


def test_every_shipped_grid_plans(data_root):
    for path in sorted((CONF_DIR / "bench").glob("*.yaml")):  # one seed: the others only change seed=N
        cells = plan(load_bench(path.stem, ["seeds=[0]"]))
        assert any(c.role == "none" for c in cells), path.stem
        json.dumps([c.args for c in cells])


def test_report_fills_the_tables_into_a_markdown_file(smoke, tmp_path):
    from harness.report import main as report_main

    root, _ = smoke
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n<!-- cpu-smoke:table2 -->\nstale\n<!-- /cpu-smoke:table2 -->\ntail\n")
    report_main([str(root), "--into", str(doc)])
    text = doc.read_text()
    assert "stale" not in text and (root / "report" / "table2.md").read_text() in text and text.endswith("tail\n")


def test_the_cost_table_marks_resumed_runs_and_leaves_them_out_of_the_ratio():
    from harness.report import cost, cost_md

    # seed 0: the undefended run was resumed (its 10 s are its last session's); seed 1: every run whole
    none = {0: {"fit_time_s": 10.0, "resumed": True}, 1: {"fit_time_s": 100.0, "resumed": False}}
    b1 = {s: {"defense": {"time_s": {"training": none[s]["fit_time_s"], "detection": 1.0, "retraining": 90.0}},
              "resumed": False} for s in (0, 1)}
    dift = {s: {"fit_time_s": 110.0, "resumed": False, "dift": {"time_s": {"embedding": 5.0}}} for s in (0, 1)}
    rows = cost({("cifar10", "simclr", "ssl"): {"none": none, "b1": b1, "dift": dift}})
    by = {r["defense"]: r for r in rows}
    assert by["none"]["resumed_runs"] == 1 and by["b1"]["resumed_runs"] == 1 and by["dift"]["resumed_runs"] == 0
    # the ratio comes from seed 1 alone: seed 0's would be 110 / 10 = 11x for DIFT
    assert by["b1"]["ratio"] == 1.91 and by["dift"]["ratio"] == 1.1 and by["dift"]["ratio_std"] == 0.0
    lines = cost_md(rows).splitlines()
    assert "resumed" in lines[2] and "resumed" in lines[3] and "ratio over 1 of 2 seeds" in lines[3]
    assert "last session" not in lines[4] and "ratio over 1 of 2 seeds" in lines[4]  # DIFT's undefended pair was

    only_resumed = cost({("c", "m", "a"): {"none": {0: none[0]}, "dift": {0: dift[0]}}})
    assert [r["ratio"] for r in only_resumed] == [None, None]


def test_time_ratios_leave_out_seeds_whose_pair_ran_on_two_machines():
    # seconds of a fast and a slow CPU are not a cost: the no-poison control on one machine, DIFT on another
    from harness.report import clean, clean_md, cost, cost_md

    slow, fast = {"machine": {"cpu": "Intel Xeon"}}, {"machine": {"cpu": "AMD EPYC"}}
    base = {"acc_linear": 50.0, "acc_knn": 45.0, "train_samples": 1000}
    control = {0: {**base, **slow, "fit_time_s": 100.0}, 1: {**base, **slow, "fit_time_s": 100.0}}
    dift = {0: {**base, **slow, "fit_time_s": 104.0, "dift": {"detected": 0, "time_s": {}}},
            1: {**base, **fast, "fit_time_s": 40.0, "dift": {"detected": 0, "time_s": {}}}}
    (row,) = clean({("cifar10", "moco", "ssl"): {"control": control, "clean_dift": dift}})
    assert row["ratio"] == 1.04 and row["ratio_seeds"] == 1  # not the mean of 1.04 and 0.40
    assert "1.040 (ratio over 1 of 2 seeds: without resumed runs or runs on another machine" in clean_md([row])
    rows = cost({("cifar10", "moco", "ssl"): {"none": control, "dift": dift}})
    assert [r["ratio"] for r in rows] == [1.0, 1.04] and "ratio over 1 of 2 seeds" in cost_md(rows).splitlines()[3]
    only_mixed = clean({("c", "m", "a"): {"control": {1: control[1]}, "clean_dift": {1: dift[1]}}})
    assert only_mixed[0]["ratio"] is None and "| – (ratio over 0 of 1 seeds" in clean_md(only_mixed)


def test_the_clean_table_compares_each_defense_with_the_controls_of_its_own_seeds():
    from harness.report import clean, clean_md

    def run(acc, detected=None):
        m = {"acc_linear": acc, "acc_knn": acc, "train_samples": 1000, "fit_time_s": 100.0}
        return {**m, "dift": {"detected": detected, "time_s": {}}} if detected is not None else m
    groups = {("cifar10", "moco", "ssl"): {"control": {0: run(56.0), 1: run(50.0)},
                                           "clean_dift": {0: run(55.5, detected=30)}}}
    (row,) = clean(groups)
    assert row["defense"] == "dift" and row["seeds"] == 1 and row["flagged"] == 30 and row["flagged_pct"] == 3.0
    assert row["control_acc_linear"] == 56.0 and row["acc_linear_drop"] == 0.5  # seed 1's control left out
    assert "| moco | ssl | dift | 1 | 30 | 3.00 | 55.50 | 56.00 | 0.50 |" in clean_md([row])


def test_the_ablation_table_sets_each_variant_beside_dift_of_its_seed_with_what_it_detected():
    from harness.report import ablation_rows, ablations_md

    def run(detected, cpu, decided=7):
        history = [{"epoch": 6, "kept": 120, "stable_precision": 1.0, "stable_recall": 0.25},
                   {"epoch": 9, "kept": 40, "stable_precision": 0.5, "stable_recall": 0.02}]  # after the decision
        return {"acc_linear": 55.0, "asr_linear": 30.0, "asr_knn": 9.0, "machine": {"cpu": cpu},
                "dift": {"detected": detected, "precision": 0.9, "recall": 0.8, "decided_epoch": decided,
                         "history": history}}
    groups = {("cifar10", "moco", "ssl"): {
        "none": {0: {"acc_linear": 56.0}, 1: {"acc_linear": 56.0}},
        "dift": {0: run(900, "Intel Xeon"), 1: run(950, "Intel Xeon")},  # seed 1 has no ablation: not listed
        "dift_no_spreading": {0: run(240, "AMD EPYC", decided=None)}}}
    rows = ablation_rows(groups)
    assert [(r["variant"], r["seed"], r["detected"]) for r in rows] == [("dift", 0, 900), ("dift_no_spreading", 0, 240)]
    assert rows[0]["precision_before"] == 1.0 and rows[0]["recall_before"] == 0.25  # the set spread at the decision
    assert rows[1]["recall_before"] == 0.02 and rows[1]["decided_epoch"] is None  # undecided: its last kept set
    text = ablations_md(rows)
    assert "| 0 | dift | Intel Xeon | 7 | 1.000 / 0.250 | 900 | 0.900 / 0.800 | 55.00 | 30.00 | 9.00 |" in text
    assert "| dift_no_spreading | AMD EPYC | – |" in text and ablations_md([]).count("\n") == 1
    rows[0]["detected"] = 0  # the stop epoch reached with no stable set: nothing removed
    assert "| dift | Intel Xeon | 7 (nothing stable) |" in ablations_md(rows)


def test_tables_mark_comparisons_between_runs_of_different_machines(tmp_path):
    # the same seed and config give other numbers on another CPU: a drop or excess that mixes machines is marked
    from harness.machine import machine, machine_id
    from harness.report import table1, table1_md, table2, table2_md

    def cpuinfo(model):
        path = tmp_path / f"cpuinfo{model}"
        path.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: {model}\n")
        return {"machine": machine(path)}

    zen3, zen4 = cpuinfo(1), cpuinfo(17)
    assert machine_id(zen3) != machine_id(zen4) and "AMD EPYC" in machine_id(zen3)
    assert machine_id({}) == "unrecorded"
    scores = {"acc_linear": 50.0, "acc_knn": 45.0, "asr_linear": 40.0, "asr_knn": 30.0}
    groups = {("cifar10", "simclr", "ssl"): {
        "none": {0: {**scores, **zen3}, 1: {**scores, **zen4}},
        "control": {0: {**scores, **zen3}, 1: {**scores, **zen4}},
        "dift": {0: {**scores, **zen3}, 1: {**scores, **zen4}},  # each seed beside its own machine's run
        "b1": {0: {**scores, **zen3}, 1: {**scores, **zen3}},  # seed 1 on another machine than its source
        "clp": {0: {**scores, **zen3}, 1: dict(scores)}}}  # seed 1 unrecorded
    t1, t2 = table1(groups), table2(groups)
    marked = {r["defense"]: r["other_machine"] for r in t2}
    assert marked == {"none": 0, "dift": 0, "b1": 1, "clp": 1}
    lines = table2_md(t2, t1).splitlines()
    names = {line.split(" | ")[3] for line in lines if line.startswith("| cifar10")}
    assert names == {"none", "clp ‡", "b1 ‡", "dift"} and lines[-1].startswith("‡")
    assert t1[0]["other_machine"] == 0 and "‡" not in table1_md(t1)
    groups[("cifar10", "simclr", "ssl")]["control"][1] = {**scores, **zen3}
    assert "ssl ‡" in table1_md(table1(groups))


def test_a_run_finished_under_two_keys_is_refused_not_guessed(smoke, tmp_path, capsys):
    # a DIFT cell made before a rule changed its key, beside the one made after: the tables would read either
    from harness.report import main as report_main

    root = tmp_path / "grid"
    shutil.copytree(smoke[0], root)
    dift = next(p for p in sorted(root.iterdir()) if (p / "cell.json").is_file() and "_dift_s0-" in p.name)
    old = root / (dift.name.rsplit("-", 1)[0] + "-00000000")
    shutil.copytree(dift, old)
    cell = json.loads((old / "cell.json").read_text())
    (old / "cell.json").write_text(json.dumps({**cell, "key": old.name}))
    with pytest.raises(SystemExit) as exit_:
        report_main([str(root)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "1 run(s) finished twice" in err and old.name in err and dift.name in err
    shutil.rmtree(old)
    report_main([str(root)])  # the grid alone again: reported


def test_table2_signs_the_undefended_runs_excess_over_the_control():
    from harness.report import table1, table2, table2_md

    def run(asr_knn):
        return {"acc_linear": 50.0, "acc_knn": 45.0, "asr_linear": 40.0, "asr_knn": asr_knn}

    groups = {("cifar10", "byol", "ssl"): {"none": {0: run(1.0)}, "control": {0: run(3.5)}}}
    text = table2_md(table2(groups), table1(groups))
    assert "40.00 (+0.0 over control)" in text and "1.00 (-2.5 over control)" in text and "+-" not in text


def one_cell_plan(root, args):
    """A plan with one training cell whose command is ``python -m ARGS`` (a stand-in for dift-pretrain)."""
    spec = {"key": "c", "phase": 0, "role": "none", "data": "d", "method": "m", "attack": "a", "seed": 0,
            "args": list(args), "source": None, "needs": []}
    root.mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps({"cells": [spec]}))
    return root / "c"


def test_a_cell_run_by_a_live_process_is_left_alone_and_a_dead_ones_lock_taken_over(tmp_path):
    """Two dift-bench over one root (or one left behind by a killed bench) once trained one cell in two processes,
    which broke its logs; a cell is run by one process at a time."""
    import socket

    from harness.bench_cell import CellFailed, run_cell

    cell = one_cell_plan(tmp_path, ["json.tool", "--help"])  # exits 0 and writes no metrics.json
    cell.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (cell / "cell.lock").write_text(f"{sleeper.pid} {socket.gethostname()}")
        with pytest.raises(CellFailed, match=f"being run by process {sleeper.pid} on this host"):
            run_cell(tmp_path, "c")
        assert (cell / "cell.lock").exists() and not (cell / "cell.log").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(CellFailed, match=r"failed \(exit 0\)"):  # the lock's process is gone: the cell runs
        run_cell(tmp_path, "c")
    assert not (cell / "cell.lock").exists() and "json.tool" in (cell / "cell.log").read_text()


def test_stopping_a_cell_stops_its_command(tmp_path):
    """SIGTERM to the cell's process (``kill`` of a running dift-bench) terminates the command it runs: nothing is
    left training in the cell's directory, and the lock is released."""
    import signal
    import time

    one_cell_plan(tmp_path, ["timeit", "-n", "1", "-r", "1", "import time; time.sleep(120)"])
    code = f"from pathlib import Path; from harness.bench_cell import run_cell; run_cell(Path({str(tmp_path)!r}), 'c')"
    cell_process = subprocess.Popen([sys.executable, "-c", code])
    lock = tmp_path / "c" / "cell.lock"
    for _ in range(300):
        if lock.exists() and "timeit" in (tmp_path / "c" / "cell.log").read_text():
            break
        time.sleep(0.1)
    child = int(subprocess.run(["pgrep", "-P", str(cell_process.pid)], capture_output=True, text=True).stdout.split()[0])
    cell_process.send_signal(signal.SIGTERM)
    assert cell_process.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert subprocess.run(["ps", "-p", str(child)], capture_output=True).returncode != 0  # the command is gone
    assert not lock.exists()
