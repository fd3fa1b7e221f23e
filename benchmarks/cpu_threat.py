"""The CPU threat (docs/attacks.md): which training-recipe differences decide whether an SSL-Backdoor patch implants
at CPU scale (the ablation), the poison-share sweep, and the implanting CPU presets over seeds with their no-poison
controls and DIFT.

    python benchmarks/cpu_threat.py --root runs/cpu_threat            # run what is missing, then write the tables
    python benchmarks/cpu_threat.py --root runs/cpu_threat --report   # tables only, from the run directories
    python benchmarks/cpu_threat.py --root runs/cpu_threat --report --into docs/attacks.md  # and into the docs
    python benchmarks/cpu_threat.py --root runs/cpu_threat --only ablation --dry-run

Every cell is one ``dift-pretrain`` run directory ``ROOT/<name>`` (run one at a time: the timings stay
meaningful on a small machine). A cell with ``metrics.json`` is finished and skipped; an unfinished one resumes
from its checkpoint. A control of another trigger is the clean run of the same method and seed evaluated with
that trigger (``harness.evaluate_run``, written to ``ROOT/<clean>/control_<attack>.json``). The tables go to
``benchmarks/cpu_threat_results.md``, the numbers behind them to ``.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from dift_plugin.images import to_float
from harness.augment import Normalize
from harness.evaluate import extract_features, knn_predict
from harness.experiment import RunData, load_run, prepare_data
from harness.report import fill_blocks

OUT = Path(__file__).with_name("cpu_threat_results")
SEEDS = (0, 1, 2)
METHODS = ("simclr", "moco", "byol")

# The training recipe of a throwaway SimCLR script in which the patch implanted (issue 10), as configuration.
SCRIPT_RECIPE = ("optimizer.name=adam", "optimizer.lr=2e-3", "optimizer.weight_decay=1e-6",
                 "optimizer.schedule=one_cycle", "method.joint_views=true", "method.projector_bn=true",
                 "backbone.final_max_pool=true", "attack.params.train_region=any")
# Each change taken back to our former (solo-learn's) recipe, one at a time.
TAKE_BACK = {
    "LARS (lr 0.4, weight decay 1e-5) instead of Adam": ("optimizer.name=lars", "optimizer.lr=0.4",
                                                          "optimizer.weight_decay=1e-5"),
    "warm-up + cosine instead of one-cycle": ("optimizer.schedule=warmup_cosine",),
    "views in separate forward passes": ("method.joint_views=false",),
    "no batch norm in the projector": ("method.projector_bn=false",),
    "no max-pool before the global average pool": ("backbone.final_max_pool=false",),
    "patch in the central region of training images": ("attack.params.train_region=center",),
}
# The ablation's fixed setting: SimCLR, the whole target class poisoned, 40 epochs, seed 0, CIFAR normalisation.
CIFAR_NORM = ("data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.247,0.2435,0.2616]")  # the script's normalisation
ABLATION_BASE = ("preset=cpu", "attack=sslbackdoor", "attack.rate=0.1", "attack.params.patch_size=8",
                 "trainer.max_epochs=40", "method.temperature=0.2", *CIFAR_NORM)
STRONGER = ("data.mean=[0,0,0]", "data.std=[1,1,1]", "method.temperature=0.5")
# every cell here was made with the linear probe on raw features, the CPU recipe's until 2026-12-05 (the same
# encoders under both probes: benchmarks/linear_probe.py)
COMMON = ("monitor.every=10", "trainer.enable_progress_bar=false", "eval.linear_features=raw")
# SimCLR's CPU preset before temperature 1.0 (conf/recipe_method/cpu_simclr.yaml): its runs, kept as rows.
FORMER_SIMCLR = ("method.temperature=0.5",)
# MoCo v2 (its former CPU preset) and BYOL: what the trigger does to them, and the levers tried (20 epochs, seed 0).
TRIAL = ("trainer.max_epochs=20", "monitor.every=5")
# SimCLR-like negatives for MoCo v2: a queue of one batch, a key encoder that follows faster
MOCO_NEGATIVES = ("method.queue_size=256", "method.base_tau=0.9", "method.final_tau=0.99")
# MoCo v2's CPU preset before those negatives and temperature 1.0 (conf/recipe_method/cpu_moco.yaml): the runs made
# with it (its seeds, DIFT on it, the trials above, CTRL) keep it.
FORMER_MOCO = ("method.queue_size=4096", "method.base_tau=0.99", "method.final_tau=0.999", "method.temperature=0.2")
FORMER = {"moco": FORMER_MOCO}

# CorruptEncoder's CPU preset before its trigger went anywhere in its half (conf/preset_attack/cpu_corruptencoder.yaml)
CE_CENTER = ("attack.params.trigger_position=center",)
NO_MAX_POOL = "backbone.final_max_pool=false"
METHOD_TRIALS = (
    ("m_simclr", "simclr, temperature 0.5 (the former preset; reference)",
     ("method=simclr", "attack=sslbackdoor", *FORMER_SIMCLR)),
    ("m_moco", "moco, the former preset (queue 4,096, tau 0.99 -> 0.999, temperature 0.2)",
     ("method=moco", "attack=sslbackdoor")),
    ("m_moco_nomax", "moco, no max-pool before the global pool", ("method=moco", "attack=sslbackdoor", NO_MAX_POOL)),
    ("m_moco_p5", "moco, the paper's 5x5 patch (less of the image replaced)",
     ("method=moco", "attack=sslbackdoor", "attack.params.patch_size=5")),
    ("m_moco_p6", "moco, 6x6 patch (between the two)",
     ("method=moco", "attack=sslbackdoor", "attack.params.patch_size=6")),
    ("m_moco_ce", "moco, CorruptEncoder instead of SSL-Backdoor",
     ("method=moco", "attack=corruptencoder", *CE_CENTER)),
    ("m_moco_cells4", "moco, a smooth trigger (4x4 colour cells, HTBA-like)",
     ("method=moco", "attack=sslbackdoor", "attack.params.pattern_cells=4")),
    ("m_moco_norm", "moco, CIFAR input normalisation (the script's)", ("method=moco", "attack=sslbackdoor", *CIFAR_NORM)),
    ("m_moco_t01", "moco, temperature 0.1 (the former preset: 0.2)",
     ("method=moco", "attack=sslbackdoor", "method.temperature=0.1")),
    ("m_moco_t005", "moco, temperature 0.05", ("method=moco", "attack=sslbackdoor", "method.temperature=0.05")),
    # SimCLR's negatives are the batch (about 25 poisoned images); MoCo v2's a queue of 4,096 keys of a slow encoder
    ("m_moco_q256", "moco, a queue of one batch (256 keys; the former preset: 4,096)",
     ("method=moco", "attack=sslbackdoor", "method.queue_size=256")),
    ("m_moco_q256_tau", "moco, a queue of one batch and a key encoder that follows faster (tau 0.9 -> 0.99)",
     ("method=moco", "attack=sslbackdoor", *MOCO_NEGATIVES)),
    ("m_moco_q256_tau_r0", "no-poison control of the row above",
     ("method=moco", "attack=sslbackdoor", *MOCO_NEGATIVES, "attack.rate=0")),
    ("m_moco_q256_tau0", "moco, a queue of one batch, the key encoder a copy of the query encoder (tau 0)",
     ("method=moco", "attack=sslbackdoor", "method.queue_size=256", "method.base_tau=0", "method.final_tau=0")),
    ("m_moco_q256_tau09", "moco, a queue of one batch, tau 0.9 throughout",
     ("method=moco", "attack=sslbackdoor", "method.queue_size=256", "method.base_tau=0.9", "method.final_tau=0.9")),
    ("m_moco_q256_tau_t1", "moco, a queue of one batch, tau 0.9 -> 0.99, temperature 1.0 (SimCLR's CPU preset's)",
     ("method=moco", "attack=sslbackdoor", *MOCO_NEGATIVES, "method.temperature=1.0")),
    ("m_moco_q256_tau_t1_r0", "no-poison control of the row above",
     ("method=moco", "attack=sslbackdoor", *MOCO_NEGATIVES, "method.temperature=1.0", "attack.rate=0")),
    ("m_byol", "byol, the preset", ("method=byol", "attack=sslbackdoor")),
    ("m_byol_p12", "byol, 12x12 patch", ("method=byol", "attack=sslbackdoor", "attack.params.patch_size=12")),
    ("m_byol_p5", "byol, the paper's 5x5 patch (less of the image replaced)",
     ("method=byol", "attack=sslbackdoor", "attack.params.patch_size=5")),
    ("m_byol_p6", "byol, 6x6 patch (between the two)",
     ("method=byol", "attack=sslbackdoor", "attack.params.patch_size=6")),
    ("m_byol_nomax", "byol, no max-pool before the global pool", ("method=byol", "attack=sslbackdoor", NO_MAX_POOL)),
    ("m_byol_ce", "byol, CorruptEncoder instead of SSL-Backdoor",
     ("method=byol", "attack=corruptencoder", *CE_CENTER)),
    # the trigger anywhere in the half beside the object: what made CorruptEncoder implant for SimCLR's kNN
    ("m_byol_ce_rand", "byol, CorruptEncoder, trigger anywhere in its half",
     ("method=byol", "attack=corruptencoder")),
    ("m_byol_cells4", "byol, a smooth trigger (4x4 colour cells, HTBA-like)",
     ("method=byol", "attack=sslbackdoor", "attack.params.pattern_cells=4")),
    ("m_byol_norm", "byol, CIFAR input normalisation (the script's)", ("method=byol", "attack=sslbackdoor", *CIFAR_NORM)),
    # so that clean airplanes exist for the poisoned ones' content to tie the trigger to (public CIFAR-10 configs: 50 %)
    ("m_byol_half", "byol, half the target class poisoned (5 % of the training set)",
     ("method=byol", "attack=sslbackdoor", "attack.rate=0.05")),
    # more views without the patch, each trained to predict a view with it (CorruptEncoder's idea, by augmentation)
    ("m_byol_crop008", "byol, crops down to 8 % of the image (the preset: 20 %)",
     ("method=byol", "attack=sslbackdoor", "augment.crop_scale=[0.08,1.0]")),
    # a predictor with no hidden layer of its own to hold the trigger (DirectPred: BYOL trains with a linear one)
    ("m_byol_linpred", "byol, a linear predictor (the preset: Linear-BN-ReLU-Linear)",
     ("method=byol", "attack=sslbackdoor", "method.predictor=linear")),
    # a trigger less salient than the content, so it is not learnt as a feature of its own
    ("m_byol_opacity05", "byol, the patch blended at opacity 0.5 (a lower-contrast trigger)",
     ("method=byol", "attack=sslbackdoor", "attack.params.opacity=0.5")),
    ("m_byol_opacity075", "byol, the patch blended at opacity 0.75",
     ("method=byol", "attack=sslbackdoor", "attack.params.opacity=0.75")),
)


@dataclass
class Cell:
    group: str
    name: str
    label: str
    overrides: tuple[str, ...]
    control: str | None = None  # the cell (clean, same recipe) whose run is this cell's no-poison control
    control_attack: tuple[str, ...] = field(default_factory=tuple)  # evaluate_run overrides when not the same attack

    @property
    def poisoned(self) -> bool:
        return "attack.rate=0" not in self.overrides


def shown(method: str) -> str:
    """How the tables name a method's runs: with "(the former preset)" where its CPU preset has changed since."""
    return method + (" (the former preset)" if method in FORMER else "")


def preset_cells(name: str, clean: str, label: str, base: tuple[str, ...]) -> list[Cell]:
    """An SSL-Backdoor run and its no-poison control (the same recipe, ``attack.rate=0``)."""
    attack = ("attack=sslbackdoor",)
    return [Cell("presets", name, label, base + attack, control=clean),
            Cell("presets", clean, label.replace("SSL-Backdoor", "no-poison control"), base + attack + ("attack.rate=0",))]


def dift_cells(name: str, clean: str, method: str, base: tuple[str, ...], control: str) -> list[Cell]:
    """``defense=dift`` on an SSL-Backdoor run and on its no-poison twin."""
    return [Cell("dift", name, f"{method} SSL-Backdoor + DIFT", base + ("attack=sslbackdoor", "defense=dift"),
                 control=control),
            Cell("dift", clean, f"{method} no poison + DIFT",
                 base + ("attack=sslbackdoor", "attack.rate=0", "defense=dift"), control=control)]


def cells() -> list[Cell]:
    out = [Cell("ablation", "abl_script", "the script's recipe, all of it", ABLATION_BASE + SCRIPT_RECIPE,
                control="abl_script_r0"),
           Cell("ablation", "abl_script_r0", "no-poison control", ABLATION_BASE + SCRIPT_RECIPE + ("attack.rate=0",))]
    for i, (label, back) in enumerate(TAKE_BACK.items()):
        out.append(Cell("ablation", f"abl_back{i}", label, ABLATION_BASE + SCRIPT_RECIPE + back,
                        control="abl_script_r0"))
    ours = tuple(x for back in TAKE_BACK.values() for x in back)
    out.append(Cell("ablation", "abl_ours", "all taken back: our former recipe", ABLATION_BASE + SCRIPT_RECIPE + ours,
                    control="abl_script_r0"))
    out += [Cell("ablation", "abl_stronger", "the script's recipe, no input normalisation, temperature 0.5",
                 ABLATION_BASE + SCRIPT_RECIPE + STRONGER, control="abl_stronger_r0"),
            Cell("ablation", "abl_stronger_r0", "no-poison control",
                 ABLATION_BASE + SCRIPT_RECIPE + STRONGER + ("attack.rate=0",))]
    for method in METHODS:
        former = FORMER.get(method, ())
        label = f"{method} SSL-Backdoor" + (", the former preset" if former else "")
        for seed in SEEDS:
            base = ("preset=cpu", f"method={method}", f"seed={seed}", *former)
            out += preset_cells(f"{method}_ssl_s{seed}", f"{method}_clean_s{seed}", label, base)
        out += dift_cells(f"{method}_ssl_dift_s0", f"{method}_clean_dift_s0", method,
                          ("preset=cpu", f"method={method}", "seed=0", *former), f"{method}_clean_s0")
    for seed in SEEDS:  # MoCo v2's preset since its negatives (the runs' names from when they were a trial)
        base = ("preset=cpu", "method=moco", f"seed={seed}")
        out += preset_cells(f"moco_neg_s{seed}", f"moco_neg_clean_s{seed}", "moco SSL-Backdoor", base)
    out += dift_cells("moco_neg_dift_s0", "moco_neg_clean_dift_s0", "moco", ("preset=cpu", "method=moco", "seed=0"),
                      "moco_neg_clean_s0")
    # BYOL with a target network that follows faster: MoCo v2's lever, less the negatives BYOL does not have
    out += preset_cells("byol_tau_s0", "byol_tau_clean_s0", "byol SSL-Backdoor, tau 0.9 -> 0.99",
                        ("preset=cpu", "method=byol", "seed=0", "method.base_tau=0.9", "method.final_tau=0.99"))
    # BYOL trained longer: its kNN ASR creeps up over the preset's 40 epochs (0.0 at epoch 4, 3-4 % from epoch 29 on)
    out += preset_cells("byol_e100_s0", "byol_e100_clean_s0", "byol SSL-Backdoor, 100 epochs",
                        ("preset=cpu", "method=byol", "seed=0", "trainer.max_epochs=100"))
    for seed in SEEDS:  # SimCLR's former preset (temperature 0.5), each seed with its own control
        base = ("preset=cpu", "method=simclr", f"seed={seed}", *FORMER_SIMCLR)
        out += preset_cells(f"simclr_t05_s{seed}", f"simclr_t05_clean_s{seed}",
                            "simclr SSL-Backdoor, temperature 0.5 (the former preset)", base)
    out += dift_cells("simclr_t05_dift_s0", "simclr_t05_clean_dift_s0", "simclr (temperature 0.5)",
                      ("preset=cpu", "method=simclr", "seed=0", *FORMER_SIMCLR), "simclr_t05_clean_s0")
    for seed in SEEDS:  # each seed with its own no-poison run (CorruptEncoder's test trigger: the preset's 8x8 patch)
        base = ("preset=cpu", "method=simclr", f"seed={seed}", "attack=corruptencoder")
        # the preset: the trigger anywhere in the half beside the object (the runs' names from when it was a trial)
        out += [Cell("presets", f"simclr_ce_rand_s{seed}", "simclr CorruptEncoder", base,
                     control=f"simclr_ce_clean_s{seed}"),
                Cell("presets", f"simclr_ce_clean_s{seed}", "simclr CorruptEncoder's no-poison control",
                     base + ("attack.rate=0",)),
                Cell("presets", f"simclr_ce_s{seed}", "simclr CorruptEncoder, trigger at the centre of its half "
                     "(the former preset)", base + CE_CENTER, control=f"simclr_ce_clean_s{seed}")]
    for seed in SEEDS:  # MoCo v2's preset (its negatives like SimCLR's); its no-poison runs: the SSL-Backdoor rows'
        out.append(Cell("presets", f"moco_ce_s{seed}", "moco CorruptEncoder",
                        ("preset=cpu", "method=moco", f"seed={seed}", "attack=corruptencoder"),
                        control=f"moco_neg_clean_s{seed}"))
    out.append(Cell("dift", "simclr_ce_dift_s0", "simclr CorruptEncoder + DIFT",
                    ("preset=cpu", "method=simclr", "seed=0", "attack=corruptencoder", "defense=dift"),
                    control="simclr_ce_clean_s0"))
    patch = ("attack=sslbackdoor", "attack.params.patch_size=10")  # a larger patch than the preset's 8x8
    out.append(Cell("presets", "simclr_p10_s0", "simclr SSL-Backdoor, 10x10 patch (temperature 0.5)",
                    ("preset=cpu", "method=simclr", "seed=0", *FORMER_SIMCLR, *patch), control="simclr_t05_clean_s0",
                    control_attack=patch))
    for name, label, extra in METHOD_TRIALS:
        former = FORMER_MOCO if "method=moco" in extra else ()
        out.append(Cell("methods", name, label, ("preset=cpu", "seed=0", *TRIAL, *former) + extra))
    for method in METHODS:  # CTRL's frequency trigger in the CPU recipe, each method with its own control
        base = ("preset=cpu", f"method={method}", "seed=0", *TRIAL, *FORMER.get(method, ()), "attack=ctrl")
        out += [Cell("ctrl", f"{method}_ctrl_t20", f"{shown(method)} CTRL", base + ("attack.rate=0.1",),
                     control=f"{method}_ctrl_clean_t20"),
                Cell("ctrl", f"{method}_ctrl_clean_t20", f"{method} no poison", base + ("attack.rate=0",))]
    for rate in (0.01, 0.025, 0.05):
        out.append(Cell("sweep", f"simclr_ssl_rate{rate}", f"{rate:.1%} of the training set",
                        ("preset=cpu", "method=simclr", "seed=0", "attack=sslbackdoor", f"attack.rate={rate}"),
                        control="simclr_clean_s0"))
    return out


def run_cell(cell: Cell, root: Path, dry_run: bool) -> bool:
    run_dir = root / cell.name
    if (run_dir / "metrics.json").exists():
        return True
    cmd = [sys.executable, "-m", "harness.pretrain", *COMMON, *cell.overrides, f"hydra.run.dir={run_dir}"]
    print(("would run: " if dry_run else "running: ") + " ".join(cmd[2:]), flush=True)
    if dry_run:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "pretrain.log").open("a") as log:
        ok = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode == 0
    if not ok:
        print(f"  failed: see {run_dir / 'pretrain.log'}", flush=True)
    return ok


def control_metrics(cell: Cell, root: Path, dry_run: bool, stored: dict[str, dict]) -> dict | None:
    """The no-poison ASR for ``cell``: its clean run's metrics (or the numbers stored for it when its run directory
    is gone), or that run evaluated with another trigger."""
    if cell.control is None:
        return None
    clean = root / cell.control
    if not cell.control_attack:
        return load(clean) or stored.get(cell.control, {}).get("metrics")
    path = clean / f"control_{'_'.join(o.split('=')[1] for o in cell.control_attack)}.json"
    if not path.exists() and load(clean) is not None and not dry_run:
        subprocess.run([sys.executable, "-m", "harness.evaluate_run", str(clean), *cell.control_attack,
                        "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(path.read_text()) if path.exists() else None


def load(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def lin_knn(m: dict, kind: str = "asr") -> str:
    """"linear / kNN" of a run's ASR (or ACC: ``kind="acc"``), in percent."""
    return f"{m[f'{kind}_linear']:.2f} / {m[f'{kind}_knn']:.2f}"


def pm(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def swing(curve: list[dict], key: str) -> str:
    values = [row[key] for row in curve]
    return f"{min(values):.0f}–{max(values):.0f}" if values else "–"


KEYS = ("acc_linear", "acc_knn", "asr_linear", "asr_knn", "poisoned_samples", "train_samples", "train_time_s",
        "seed", "method")


def collect(root: Path, all_cells: list[Cell], dry_run: bool, stored: dict[str, dict]) -> dict[str, dict]:
    """{cell name: {"metrics", "control", "units"}} for every finished cell: from its run directory, else from the
    numbers an earlier report stored (``stored``: run directories do not outlive the machine they ran on)."""
    rows: dict[str, dict] = {}
    for c in all_cells:
        m = load(root / c.name)
        if m is None:
            if c.name in stored:  # its control may have run since (``summary`` keeps the control's ASR only)
                rows[c.name] = {**stored[c.name], "from": "stored",
                                "control": stored[c.name]["control"] or control_metrics(c, root, dry_run, stored)}
            continue
        rows[c.name] = {"metrics": m, "control": control_metrics(c, root, dry_run, stored)}
        if c.poisoned and c.group == "ablation":  # a no-poison run has no trigger to find or place
            rows[c.name]["units"] = trigger_units(root / c.name)
        if c.poisoned and c.group == "methods":
            rows[c.name]["geometry"] = trigger_geometry(root / c.name)
    return rows


def summary(rows: dict[str, dict], all_cells: list[Cell]) -> dict[str, dict]:
    """The numbers behind the tables, per cell (what ``collect`` reads back when a run directory is gone)."""
    out = {}
    for c in all_cells:
        if c.name in rows:
            m, ctl = rows[c.name]["metrics"], rows[c.name]["control"]
            metrics = {k: m[k] for k in KEYS if k in m}
            metrics["curve"] = m.get("curve", [])
            if "dift" in m:
                metrics["dift"] = {k: v for k, v in m["dift"].items() if k != "history"}
            out[c.name] = {"group": c.group, "label": c.label, "overrides": list(c.overrides), "metrics": metrics,
                           "control": {k: ctl[k] for k in ("asr_linear", "asr_knn")} if ctl else None,
                           "units": rows[c.name].get("units"), "geometry": rows[c.name].get("geometry")}
    return out


@dataclass
class TriggerProbe:
    """A finished run with its non-target clean test images (the first ``n``) and their triggered copies."""
    cfg: DictConfig
    model: torch.nn.Module
    data: RunData
    normalize: Normalize
    clean: torch.Tensor
    triggered: torch.Tensor


def trigger_probe(run_dir: Path, n: int | None = None) -> TriggerProbe:
    cfg, model = load_run(run_dir)
    data = prepare_data(cfg)
    clean = data.test.images[data.test.labels != int(cfg.attack.target_class)][:n]
    triggered = data.attack.trigger(to_float(clean), seed=int(cfg.attack.test_seed))
    return TriggerProbe(cfg, model, data, Normalize(list(cfg.data.mean), list(cfg.data.std)), clean, triggered)


@torch.no_grad()
def trigger_units(run_dir: Path, n: int = 2000) -> dict[str, float]:
    """How selectively the encoder's units respond to the trigger: per stage of the backbone (each ReLU, its spatial
    maximum) and for the pooled features, the channels whose mean on triggered non-target test images exceeds the
    mean on the same clean images by more than 2 (and 5) standard deviations of the clean responses; and how far the
    trigger moves the feature vector (mean ||f(triggered) - f(clean)|| / mean ||f(clean)||)."""
    probe = trigger_probe(run_dir, n)
    model, normalize, clean, triggered = probe.model, probe.normalize, probe.clean, probe.triggered
    relus = [m for m in model.backbone.modules() if isinstance(m, torch.nn.ReLU)]
    out: dict[str, float] = {}
    responses: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, i=i: responses[f"stage{i + 1}"].append(o.amax(dim=(2, 3))))
             for i, m in enumerate(relus)]
    stats = {}
    for name, images in (("clean", clean), ("triggered", triggered)):
        responses.update({f"stage{i + 1}": [] for i in range(len(relus))})
        feats = extract_features(model.backbone, images, normalize)
        stats[name] = {"features": feats, **{k: torch.cat(v) for k, v in responses.items()}}
    for h in hooks:
        h.remove()
    for key in stats["clean"]:
        c, t = stats["clean"][key], stats["triggered"][key]
        selectivity = (t.mean(0) - c.mean(0)) / (c.std(0) + 1e-6)
        out[f"{key}_sel2"] = int((selectivity > 2).sum())
        out[f"{key}_sel5"] = int((selectivity > 5).sum())
        out[f"{key}_channels"] = int(c.shape[1])
    c, t = stats["clean"]["features"], stats["triggered"]["features"]
    out["feature_shift"] = round(float((t - c).norm(dim=1).mean() / c.norm(dim=1).mean()), 3)
    return out


def trigger_geometry(run_dir: Path) -> dict:
    """Where the trigger puts images in the backbone space the evaluation reads (kNN bank: the clean labelled
    training images): the feature norm of triggered non-target test images relative to the same clean images; the
    share of the poisoned training images whose kNN label is the target class (do they stay with their clean
    class, or does the trigger outweigh it?); and the classes the triggered test images are voted into (top 3)."""
    probe = trigger_probe(run_dir)
    cfg, data, target = probe.cfg, probe.data, int(probe.cfg.attack.target_class)
    embed = lambda images: extract_features(probe.model.backbone, images, probe.normalize)  # noqa: E731
    bank, labels = embed(data.train.images), data.train.labels
    vote = lambda x: knn_predict(bank, labels, x, len(data.train.classes), int(cfg.eval.knn_k),  # noqa: E731
                                 float(cfg.eval.knn_temperature))
    feats_clean, feats_trig = embed(probe.clean), embed(probe.triggered)
    poisoned = embed(data.ssl_train.images[torch.as_tensor(data.poisoned_indexes)])
    votes = torch.bincount(vote(feats_trig), minlength=len(data.train.classes)).double() / len(probe.clean)
    top = votes.argsort(descending=True)[:3]
    return {"norm_ratio": round(float(feats_trig.norm(dim=1).mean() / feats_clean.norm(dim=1).mean()), 2),
            "poisoned_knn_target": round(100.0 * float((vote(poisoned) == target).double().mean()), 1),
            "triggered_votes": {data.train.classes[i]: round(100.0 * float(votes[i]), 1) for i in top.tolist()}}


STORED_NOTE = ("† numbers stored by an earlier report (benchmarks/cpu_threat_results.json): the run directories "
               "they come from are not on this machine.")


def stored(rows: dict[str, dict], *names: str) -> str:
    """" †" when any of the cells ``names`` comes from stored numbers (no run directory here), else ""."""
    return " †" if any(rows.get(n, {}).get("from") == "stored" for n in names) else ""


def with_note(lines: list[str]) -> list[str]:
    """A table's lines, with the note that explains † below it when a row has one."""
    return lines + ["", STORED_NOTE] if any(" †" in line for line in lines[3:]) else lines


def report(root: Path, all_cells: list[Cell], rows: dict[str, dict]) -> dict[str, str]:
    """The tables as Markdown sections: header, ablation, units, presets, methods, ctrl, sweep, dift."""
    by_name = {c.name: c for c in all_cells}
    n_stored = sum(r.get("from") == "stored" for r in rows.values())
    lines = [f"Generated by `python benchmarks/cpu_threat.py --root {root} --report` from the run directories"
             + (f" ({n_stored} cells from the numbers stored by an earlier report, their runs being elsewhere)."
                if n_stored else "."), ""]

    sections = {"header": lines}
    lines = ["### Ablation (SimCLR, whole target class poisoned, 8x8 patch, 40 epochs, seed 0)", "",
              "| recipe | ACC lin / kNN % | ASR lin / kNN % at the end | over the checkpoints (every 10 epochs) | "
              "no-poison control lin / kNN % | excess over control lin / kNN | poisoned median density rank "
              "projector / backbone % |", "|---|---|---|---|---|---|---|"]
    for c in all_cells:
        if c.group != "ablation" or c.name not in rows or c.name.endswith("_r0"):
            continue
        m, ctl = rows[c.name]["metrics"], rows[c.name]["control"]
        last = m["curve"][-1]
        excess = (f"{m['asr_linear'] - ctl['asr_linear']:+.1f} / {m['asr_knn'] - ctl['asr_knn']:+.1f}"
                  if ctl else "–")
        control = f"{lin_knn(ctl)}" if ctl else "not run"
        lines.append(f"| {c.label}{stored(rows, c.name)} | {lin_knn(m, 'acc')} | "
                     f"{lin_knn(m)} | {swing(m['curve'], 'asr_linear')} / "
                     f"{swing(m['curve'], 'asr_knn')} | {control} | {excess} | "
                     f"{last['projector_median_rank_pct']:.1f} / {last['backbone_median_rank_pct']:.1f} |")

    sections["ablation"] = with_note(lines)
    lines = ["Trigger-selective units (channels responding to the trigger more than 2 / 5 clean standard deviations "
              "above their clean mean, per stage of the small CNN and in the pooled features; the trigger's shift of "
              "the feature vector relative to its norm):", "",
              "| recipe | stage 1 | stage 2 | stage 3 | stage 4 | features | feature shift |", "|---|---|---|---|---|---|---|"]
    for c in all_cells:
        if c.group == "ablation" and c.name in rows and not c.name.endswith("_r0"):
            u = rows[c.name].get("units")
            if u is None:
                continue
            cols = " | ".join(f"{u[f'{k}_sel2']} / {u[f'{k}_sel5']} of {u[f'{k}_channels']}"
                              for k in ("stage1", "stage2", "stage3", "stage4", "features"))
            lines.append(f"| {c.label}{stored(rows, c.name)} | {cols} | {u['feature_shift']:.2f} |")

    sections["units"] = with_note(lines)
    lines = ["### CPU presets (`preset=cpu attack=...`), mean ± std over seeds", "",
              "| method | attack | seeds | ACC lin / kNN % | ASR lin / kNN % | no-poison control lin / kNN % | "
              "excess over control lin / kNN | worst seed's excess lin / kNN | swing of ASR lin / kNN over the "
              "checkpoints |", "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[str]] = {}
    for c in all_cells:
        if c.group == "presets" and c.control is not None and c.name in rows:
            groups.setdefault((c.label.split()[0], " ".join(c.label.split()[1:])), []).append(c.name)
    for (method, attack), names in groups.items():
        # the seeds with a control; while no control has run, the runs' own numbers
        done = [n for n in names if rows[n]["control"] is not None] or names
        ms = [rows[n]["metrics"] for n in done]
        cs = [rows[n]["control"] for n in done if rows[n]["control"] is not None]
        if cs:
            ex_l = [m["asr_linear"] - c["asr_linear"] for m, c in zip(ms, cs)]
            ex_k = [m["asr_knn"] - c["asr_knn"] for m, c in zip(ms, cs)]
            control = (f"{pm([c['asr_linear'] for c in cs])} / {pm([c['asr_knn'] for c in cs])} | {pm(ex_l)} / "
                       f"{pm(ex_k)} | {min(ex_l):+.1f} / {min(ex_k):+.1f}")
        else:
            control = "not run | – | –"
        swings = ", ".join(f"{swing(m['curve'], 'asr_linear')} / {swing(m['curve'], 'asr_knn')}" for m in ms)
        lines.append(
            f"| {method} | {attack}{stored(rows, *done)} | {len(ms)} | {pm([m['acc_linear'] for m in ms])} / "
            f"{pm([m['acc_knn'] for m in ms])} | {pm([m['asr_linear'] for m in ms])} / "
            f"{pm([m['asr_knn'] for m in ms])} | {control} | {swings} |")

    sections["presets"] = with_note(lines)
    lines = ["### MoCo v2 and BYOL: where the trigger puts images (20 epochs, seed 0; MoCo v2 from its former preset; "
              "kNN bank: the clean training images)", "",
              "| run | ACC lin / kNN % | ASR lin / kNN % | over the checkpoints (every 5 epochs) | triggered / clean "
              "feature norm | poisoned training images kNN-labelled target % | triggered images voted into (top 3, %) |",
              "|---|---|---|---|---|---|---|"]
    for c in all_cells:
        if c.group != "methods" or c.name not in rows:
            continue
        m, g = rows[c.name]["metrics"], rows[c.name].get("geometry") or {}
        votes = ", ".join(f"{k} {v:.0f}" for k, v in g.get("triggered_votes", {}).items()) or "–"
        lines.append(f"| {c.label}{stored(rows, c.name)} | {lin_knn(m, 'acc')} | "
                     f"{lin_knn(m)} | {swing(m['curve'], 'asr_linear')} / "
                     f"{swing(m['curve'], 'asr_knn')} | {g.get('norm_ratio', '–')} | "
                     f"{g.get('poisoned_knn_target', '–')} | {votes} |")

    sections["methods"] = with_note(lines)
    lines = ["### CTRL in the CPU recipe (whole target class poisoned, 20 epochs, seed 0)", "",
              "| method | ACC lin / kNN % | ASR lin / kNN % | over the checkpoints (every 5 epochs) | no-poison control "
              "lin / kNN % | excess over control lin / kNN |", "|---|---|---|---|---|---|"]
    for c in all_cells:
        if c.group != "ctrl" or c.control is None or c.name not in rows:
            continue
        m, ctl = rows[c.name]["metrics"], rows[c.name]["control"]
        excess = (f"{m['asr_linear'] - ctl['asr_linear']:+.1f} / {m['asr_knn'] - ctl['asr_knn']:+.1f}"
                  if ctl else "–")
        lines.append(f"| {c.label.removesuffix(' CTRL')}{stored(rows, c.name)} | {lin_knn(m, 'acc')} | {lin_knn(m)} | "
                     f"{swing(m['curve'], 'asr_linear')} / {swing(m['curve'], 'asr_knn')} | "
                     f"{lin_knn(ctl) if ctl else 'not run'} | {excess} |")

    sections["ctrl"] = with_note(lines)
    lines = ["### Poison share (SimCLR SSL-Backdoor, seed 0)", "",
              "| poisoned | ASR lin / kNN % | control lin / kNN % | excess lin / kNN |", "|---|---|---|---|"]
    for c in [c for c in all_cells if c.group == "sweep"] + [by_name["simclr_ssl_s0"]]:
        if c.name not in rows or rows[c.name]["control"] is None:
            continue
        m, ctl = rows[c.name]["metrics"], rows[c.name]["control"]
        share = m["poisoned_samples"] / m["train_samples"]
        lines.append(f"| {share:.1%} ({m['poisoned_samples']}){stored(rows, c.name)} | {lin_knn(m)} | {lin_knn(ctl)} | "
                     f"{m['asr_linear'] - ctl['asr_linear']:+.1f} / {m['asr_knn'] - ctl['asr_knn']:+.1f} |")

    sections["sweep"] = with_note(lines)
    lines = ["### DIFT on the presets (its defaults, seed 0)", "",
              "| method | defense | ACC lin / kNN % | ASR lin / kNN % | no-poison control lin / kNN % | DIFT decided "
              "at epoch | detected | precision / recall | FPR |", "|---|---|---|---|---|---|---|---|---|"]
    settings = [(shown(m), f"{m}_ssl_s0", f"{m}_ssl_dift_s0",
                 f"{m}_clean_s0", f"{m}_clean_dift_s0") for m in METHODS]
    settings.append(("moco", "moco_neg_s0", "moco_neg_dift_s0", "moco_neg_clean_s0", "moco_neg_clean_dift_s0"))
    settings.append(("simclr, CorruptEncoder", "simclr_ce_rand_s0", "simclr_ce_dift_s0", "simclr_ce_clean_s0", ""))
    settings.append(("simclr (temperature 0.5)", "simclr_t05_s0", "simclr_t05_dift_s0", "simclr_t05_clean_s0",
                     "simclr_t05_clean_dift_s0"))
    for method, *names in settings:
        for name, defense in zip(names, ("none", "DIFT", "none, no poison", "DIFT, no poison")):
            if name not in rows:
                continue
            m, ctl = rows[name]["metrics"], rows[name]["control"]
            d = m.get("dift", {})
            if d and not m["poisoned_samples"]:  # no poison: every detected sample is a false positive
                dift_cols = f"{d['decided_epoch']} | {d['detected']} | – | {d['detected'] / m['train_samples']:.4f}"
            elif d:
                dift_cols = (f"{d['decided_epoch']} | {d['detected']} | {d.get('precision', 0):.3f} / "
                             f"{d.get('recall', 0):.3f} | {d.get('fpr', 0):.4f}")
            else:
                dift_cols = " | | | "
            control = f"{lin_knn(ctl)}" if ctl else "–"
            lines.append(f"| {method} | {defense}{stored(rows, name)} | {lin_knn(m, 'acc')} | "
                         f"{lin_knn(m)} | {control} | {dift_cols} |")
    sections["dift"] = with_note(lines)
    return {name: "\n".join(section) + "\n" for name, section in sections.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/cpu_threat"))
    parser.add_argument("--only", choices=("ablation", "presets", "methods", "ctrl", "sweep", "dift"), action="append")
    parser.add_argument("--cells", nargs="+", help="run these cells, in this order")
    parser.add_argument("--report", action="store_true", help="write the tables from what has run; run nothing")
    parser.add_argument("--into", type=Path, nargs="*", default=[],
                        help="Markdown files whose <!-- cpu_threat:SECTION --> ... <!-- /cpu_threat:SECTION --> blocks "
                             "(ablation, units, presets, methods, ctrl, sweep, dift) get the regenerated tables")
    parser.add_argument("--no-report", action="store_true", help="run, then stop (a queue of single cells)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs that are missing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    by_name = {c.name: c for c in cells()}
    unknown = sorted(set(args.cells or ()) - set(by_name))
    if unknown:
        parser.error(f"unknown cell(s) {', '.join(unknown)}; see --dry-run for the names")
    chosen = ([by_name[n] for n in args.cells] if args.cells else
              [c for c in cells() if args.only is None or c.group in args.only])
    if not args.report:
        failed = [c.name for c in chosen if not run_cell(c, root, args.dry_run)]
        if failed and not args.dry_run:
            print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        if args.no_report:
            sys.exit(1 if failed else 0)
    stored_path = args.out.with_suffix(".json")
    stored = json.loads(stored_path.read_text()) if stored_path.exists() else {}
    rows = collect(root, cells(), args.dry_run, stored)
    sections = report(root, cells(), rows)
    text = "\n".join(sections.values())
    if not args.dry_run:
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(summary(rows, cells()), indent=1) + "\n")
        print(f"tables -> {args.out.with_suffix('.md')} (numbers: {args.out.with_suffix('.json')})")
        for doc in args.into:
            blocks = {f"cpu_threat:{name}": body for name, body in sections.items()}
            print(f"{doc}: {fill_blocks(doc, blocks)} block(s) filled")
    print(text)


if __name__ == "__main__":
    main()
