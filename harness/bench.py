"""``dift-bench``: the comparison grid (data x methods x attacks x defenses x seeds) as resumable cells, run through
hydra launchers, then ``dift-report`` over the cells on disk.

    dift-bench bench=cpu-demo                                   # conf/bench/cpu-demo.yaml, into runs/bench/cpu-demo
    dift-bench bench=cpu root=/data/bench hydra/launcher=joblib hydra.launcher.n_jobs=2
    dift-bench bench=paper hydra/launcher=submitit_slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1
    dift-bench bench=my_grid.yaml bench.seeds=[0,1] --dry-run   # a grid file of one's own; print the cells

A grid (``conf/bench/*.yaml``) expands into cells, each a directory ``ROOT/<name>-<hash>`` keyed by its config
(the composed ``dift-pretrain`` config of a training cell less what only changes what the run prints, ``UNKEYED``,
and less keys added later while at the default that trains what runs trained before them,
``harness.config.ADDED_AT_DEFAULT``; the source cell and defense settings of a defense cell):

- phase 1, training: per data, method, attack setting and seed the undefended run, the no-poison control
  (``attack.rate=0``: the same trigger at test time; its ACC is the clean baseline), DIFT and DIFT's ablations;
- phase 2, post-training defenses of the undefended run (``dift-defend``): CLP, B1 and detection-only filters;
- phase 3, B2 = CLP on B1's re-trained encoder.

``clean_defenses`` run defenses on the no-poison data too (roles ``clean_<defense>``: DIFT trained with
``attack.rate=0``, the post-training ones defending the control): what each removes from, and costs, a training
set with nothing to find.

Each phase is one hydra multirun of ``harness.bench_cell`` over the unfinished cells, with the launcher named on
the command line (``hydra/launcher=...``: basic, i.e. one cell after the other, by default). A finished cell is
skipped; an unfinished one resumes from its checkpoints; a failed one is reported (its ``cell.log``) and does not
stop the others; a cell whose source failed waits for the next run. The report is then regenerated from the run
directories alone (``dift-report ROOT``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from dift_plugin.errors import DiftUserError
from harness.config import CONF_DIR, without_added_defaults
from harness.data import pin_data_root
from harness.machine import machine
from harness.pretrain import package_versions, write_json

PHASES = ("training", "post-training defenses", "defenses of re-trained runs")
POST_DEFENSES = ("clp", "b1", "b2")
ATTACK_KEYS = ("name", "label", "overrides", "seeds", "ablations")  # an attack setting of a grid
# Settings that change what a run prints, not what it trains or reports at its end: left out of the cell keys, so a
# run made with another monitor period or without a progress bar is the same cell (tests/test_pretrain.py checks it).
UNKEYED = ("trainer.enable_progress_bar", "monitor.every")
GRID_KEYS = ("name", "description", "base", "data", "methods", "attacks", "seeds", "control", "defenses", "detection",
             "ablations", "ablation_seeds", "clean_defenses", "defense_overrides", "deviations")


@dataclass(frozen=True)
class Cell:
    """One run of the grid. ``args`` follow ``python -m``; ``{root}`` and ``{dir}`` stand for the grid's root and
    the cell's directory. ``source``: the key of the run a post-training defense defends."""

    key: str
    phase: int
    role: str  # none | control | dift | an ablation's name | clp | b1 | b2 | filter_<algorithm> | clean_<defense>
    data: str
    method: str
    attack: str  # the attack setting's label
    seed: int
    args: tuple[str, ...]
    source: str | None = None
    needs: tuple[str, ...] = field(default=())  # cells that must be finished first

    def done(self, root: Path) -> bool:
        return finished(root / self.key, self.phase > 0)


def finished(cell_dir: Path, defense: bool) -> bool:
    """A training cell is finished when its ``metrics.json`` exists; a defense cell when it has its defense block."""
    path = cell_dir / "metrics.json"
    if not path.exists():
        return False
    return not defense or isinstance(json.loads(path.read_text()).get("defense"), dict)


def has_weights(cell_dir: Path) -> bool:
    return (cell_dir / "checkpoints" / "last.ckpt").exists()


def reopen_stale_sources(root: Path, cells: list[Cell]) -> list[str]:
    """Finished cells whose weights are gone (their light files carried to another machine, the checkpoints not)
    while an unfinished cell still has to defend them: their metrics are set aside as ``metrics.stale.json`` so that
    they run again (training is seeded: they come back the same, up to the floating-point order of another thread
    count) and leave weights to load. Transitive: a B1 run reopened for B2 needs its own source's weights too.
    Returns the reopened keys."""
    reopened: list[str] = []
    while True:
        done = {c.key: c.done(root) for c in cells}
        stale = sorted({n for c in cells if not done[c.key] for n in c.needs
                        if done[n] and not has_weights(root / n)})
        if not stale:
            return reopened
        for key in stale:
            (root / key / "metrics.json").replace(root / key / "metrics.stale.json")
            reopened.append(key)


def load_bench(spec: str, overrides: list[str]) -> DictConfig:
    """``conf/bench/<spec>.yaml`` (or the YAML file ``spec``) with ``bench.KEY=VALUE`` overrides."""
    path = Path(spec) if spec.endswith((".yaml", ".yml")) else CONF_DIR / "bench" / f"{spec}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (CONF_DIR / "bench").glob("*.yaml")))
        raise DiftUserError(f"bench={spec}: no such grid; choose one of {known}, or pass a YAML file")
    cfg = OmegaConf.load(path)
    unknown = sorted({o.split("=")[0].split(".")[0] for o in overrides} - set(GRID_KEYS))
    if unknown:
        raise DiftUserError(f"bench.{unknown[0]}: not a grid key; the keys are {', '.join(GRID_KEYS)}")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors name the key
        raise DiftUserError(f"bench={spec}: {e}") from e
    for key in ("name", "data", "methods", "attacks", "seeds"):
        if not cfg.get(key):
            raise DiftUserError(f"bench={spec}: `{key}` is missing or empty")
    for attack in cfg.attacks:
        if not isinstance(attack, DictConfig) or not attack.get("name"):
            raise DiftUserError(f"bench={spec}: each entry of `attacks` needs a name: {{name: sslbackdoor, ...}}")
        extra = sorted(set(attack) - set(ATTACK_KEYS))
        if extra:
            raise DiftUserError(f"bench={spec}: attack setting {_label(attack)}: unknown "
                                f"key {extra[0]}; the keys are {', '.join(ATTACK_KEYS)}")
        if "seeds" in attack and not attack.seeds:
            raise DiftUserError(f"bench={spec}: attack setting {_label(attack)}: `seeds` is empty")
    for key in ("defenses", "clean_defenses"):
        listed = _as_list(cfg.get(key))
        unknown = sorted(set(listed) - {"dift", *POST_DEFENSES})
        if unknown:
            raise DiftUserError(f"bench={spec}: unknown {key} {unknown}; choose from dift, clp, b1, b2")
        if "b2" in listed and "b1" not in listed:
            raise DiftUserError(f"bench={spec}: b2 re-uses B1's run: list b1 in `{key}` too")
    if cfg.get("clean_defenses") and not cfg.get("control", True):
        raise DiftUserError(f"bench={spec}: `clean_defenses` run on the no-poison control's data: set control: true")
    return cfg


def _label(attack: DictConfig) -> str:
    """An attack setting's name in cell keys and messages: its ``label``, else its attack's name."""
    return str(attack.get("label") or attack.get("name"))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _as_list(value: ListConfig | list | None) -> list[str]:
    return [str(v) for v in (value or [])]


def plan(bench: DictConfig) -> list[Cell]:
    """The grid's cells, training first; keyed by the composed config (training) or the defended cell (defenses).
    Composing every training config here also refuses a bad override before anything runs."""
    cells: list[Cell] = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for entry, method, attack in itertools.product(bench.data, bench.methods, bench.attacks):
            for seed in attack.get("seeds", bench.seeds):
                cells += _setting_cells(bench, entry, str(method), attack, int(seed))
    return cells


def _setting_cells(bench: DictConfig, entry: str | DictConfig, method: str, attack: DictConfig,
                   seed: int) -> list[Cell]:
    """One data x method x attack setting at one seed: its training cells, then its defenses' cells."""
    cells: list[Cell] = []
    data = str(entry if isinstance(entry, str) else entry.name)
    label = _label(attack)
    base = [*_as_list(bench.get("base")), f"data={data}",
            *([] if isinstance(entry, str) else _as_list(entry.get("overrides"))),
            f"method={method}", f"attack={attack.name}", *_as_list(attack.get("overrides")), f"seed={seed}"]
    keys = {}
    for role, extra in _training_roles(bench, seed, bool(attack.get("ablations", True))).items():
        try:
            cfg = compose(config_name="pretrain", overrides=[*base, *extra])
        except Exception as e:  # noqa: BLE001 - hydra names the bad override
            raise DiftUserError(f"cell {method}/{label}/{role}/seed {seed}: {e}") from e
        keys[role] = f"{data}_{method}_{label}_{role}_s{seed}-{_digest(keyed_text(cfg))}"
        cells.append(Cell(keys[role], 0, role, data, method, label, seed,
                          ("harness.pretrain", *base, *extra, "hydra.run.dir={dir}")))
    cells += _post_training(bench, keys["none"], data, method, label, seed, _as_list(bench.get("defenses")),
                            _as_list(bench.get("detection")))
    if "control" in keys:
        cells += _post_training(bench, keys["control"], data, method, label, seed,
                                _as_list(bench.get("clean_defenses")), [], prefix="clean_")
    return cells


def keyed_text(cfg: DictConfig) -> str:
    """The YAML a training cell's key digests: ``cfg`` less ``UNKEYED`` and the keys added later that hold their
    default (``harness.config.ADDED_AT_DEFAULT``: finished cells keep their keys; tests/test_bench.py pins one)."""
    return OmegaConf.to_yaml(without_added_defaults(cfg, also=UNKEYED))


def _training_roles(bench: DictConfig, seed: int, ablations: bool = True) -> dict[str, list[str]]:
    """The training cells of one setting and seed: role -> overrides on top of the setting's (DIFT's ablations
    unless the attack setting says ``ablations: false``)."""
    roles = {"none": []}
    if bench.get("control", True):
        roles["control"] = ["attack.rate=0"]
    if "dift" in _as_list(bench.get("defenses")):
        roles["dift"] = ["defense=dift"]
    if "control" in roles and "dift" in _as_list(bench.get("clean_defenses")):
        roles["clean_dift"] = ["attack.rate=0", "defense=dift"]
    if ablations and (bench.get("ablation_seeds") is None or seed in bench.ablation_seeds):
        roles.update({str(k): ["defense=dift", *_as_list(v)] for k, v in (bench.get("ablations") or {}).items()})
    return roles


def _post_training(bench: DictConfig, source: str, data: str, method: str, label: str, seed: int,
                   defenses: list[str], detection: list[str], prefix: str = "") -> list[Cell]:
    """CLP, B1, the detection-only filters (phase 2) and B2 (phase 3) of the run ``source`` (the undefended run;
    the control for ``clean_defenses``, roles ``prefix`` + defense)."""
    settings = {prefix + d: [f"defense={d}"] for d in defenses if d in ("clp", "b1")}
    settings.update({f"{prefix}filter_{a}": ["defense=filter", f"defense.filter.algorithm={a}"] for a in detection})
    shared = _as_list(bench.get("defense_overrides"))  # e.g. defense.u=2.5, given to every defense that has the key
    cells: list[Cell] = []

    def add(phase: int, role: str, extra: list[str], needs: tuple[str, ...]) -> str:
        args = _defend_args(source, role, extra, shared)
        key = f"{data}_{method}_{label}_{role}_s{seed}-{_digest(source + repr(args))}"
        cells.append(Cell(key, phase, role, data, method, label, seed, args, source, needs))
        return key

    keys = {role: add(1, role, extra, (source,)) for role, extra in settings.items()}
    if "b2" in defenses:
        b1 = keys[prefix + "b1"]
        add(2, prefix + "b2", ["defense=b2", "defense.b1_run={root}/" + b1], (source, b1))
    return cells


DEFENSE_KEYS = {"clp": ("u",), "b1": ("space", "filter"), "b2": ("u", "space", "filter"), "filter": ("space", "filter")}


def _defend_args(source: str, role: str, extra: list[str], shared: list[str]) -> tuple[str, ...]:
    """``dift-defend`` of the cell ``source`` with ``extra``, plus the grid's ``defense.KEY=VALUE`` overrides whose
    key the defense has."""
    keys = DEFENSE_KEYS[role.removeprefix("clean_").split("_")[0]]
    mine = [o for o in shared if o.removeprefix("defense.").split("=")[0].split(".")[0] in keys]
    return ("harness.defend", "{root}/" + source, *extra, *mine, "hydra.run.dir={dir}")


def environment() -> dict:
    """Where the grid ran: CPU model and cores, GPU (if any), package versions."""
    return {**machine(), "versions": package_versions()}


def launch(root: Path, cells: list[Cell], launcher_args: list[str]) -> None:
    """One hydra multirun of ``harness.bench_cell`` over ``cells`` with the given launcher settings."""
    cmd = [sys.executable, "-m", "harness.bench_cell", "--multirun", f"root={root}",
           "cell=" + ",".join(c.key for c in cells), *launcher_args]
    subprocess.run(cmd, check=False)  # failures are read from the cells' directories afterwards


def run_grid(bench: DictConfig, root: Path, launcher_args: list[str], command: str) -> dict[str, list[str]]:
    """Run every unfinished cell, phase by phase; returns the keys of the ``failed`` and ``waiting`` cells."""
    cells = plan(bench)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "plan.json", {"bench": OmegaConf.to_container(bench), "command": command,
                                    "launcher": launcher_args, "environment": environment(),
                                    "cells": [asdict(c) for c in cells]})
    reopened = reopen_stale_sources(root, cells)
    if reopened:
        print(f"[dift-bench] {len(reopened)} finished cell(s) run again, their weights being gone while a defense of "
              f"them is not finished: {', '.join(reopened)}", flush=True)
    failed: list[str] = []
    waiting: list[str] = []
    for phase, title in enumerate(PHASES):
        done = {c.key: c.done(root) for c in cells}
        mine = [c for c in cells if c.phase == phase]
        todo = [c for c in mine if not done[c.key] and all(done[n] for n in c.needs)]
        waiting += [c.key for c in mine if not done[c.key] and c not in todo]
        print(f"[dift-bench] phase {phase + 1} ({title}): {len(mine)} cells, {sum(done[c.key] for c in mine)} "
              f"finished earlier, {len(todo)} to run", flush=True)
        if todo:
            started = time.perf_counter()
            launch(root, todo, launcher_args)
            failed += [c.key for c in todo if not c.done(root)]
            print(f"[dift-bench] phase {phase + 1} took {time.perf_counter() - started:.0f} s", flush=True)
    return {"failed": failed, "waiting": waiting}


def split_args(argv: list[str]) -> tuple[str, list[str], Path | None, list[str], bool]:
    """``bench=NAME``, ``bench.KEY=VALUE``, ``root=DIR``, hydra launcher arguments and ``--dry-run``."""
    names = [a.split("=", 1)[1] for a in argv if a.startswith("bench=")]
    if len(names) != 1:
        known = ", ".join(sorted(p.stem for p in (CONF_DIR / "bench").glob("*.yaml")))
        raise DiftUserError(f"say which grid, once: bench=NAME ({known}) or bench=FILE.yaml")
    roots = [Path(a.split("=", 1)[1]) for a in argv if a.startswith("root=")]
    hydra_args = [a for a in argv if a.startswith(("hydra/", "hydra.", "+hydra"))]
    bench_args = [a.removeprefix("bench.") for a in argv if a.startswith("bench.")]
    unknown = [a for a in argv if not a.startswith(("bench=", "bench.", "root=", "hydra/", "hydra.", "+hydra"))
               and a != "--dry-run"]
    if unknown:
        raise DiftUserError(f"unknown argument(s) {unknown}: give bench=NAME, bench.KEY=VALUE, root=DIR, "
                            "hydra/launcher=NAME, hydra.launcher.KEY=VALUE")
    return names[0], bench_args, roots[-1] if roots else None, hydra_args, "--dry-run" in argv


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        pin_data_root()
        name, bench_args, root, launcher_args, dry_run = split_args(argv)
        bench = load_bench(name, bench_args)
        root = (root or Path("runs") / "bench" / str(bench.name)).resolve()
        if dry_run:
            for c in plan(bench):
                print(f"phase {c.phase + 1}  {'done' if c.done(root) else 'todo'}  {c.key}")
            return
        status = run_grid(bench, root, launcher_args, " ".join(["dift-bench", *argv]))
    except DiftUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from harness.report import write_report

    out = write_report(root)
    for kind in ("failed", "waiting"):
        if status[kind]:
            print(f"[dift-bench] {len(status[kind])} cell(s) {kind}: " + ", ".join(status[kind])
                  + (" (see each cell's cell.log; run the same command again to retry)" if kind == "failed" else
                     " (their source run is not finished)"), file=sys.stderr)
    print(f"[dift-bench] report: {out / 'README.md'}")
    if status["failed"] or status["waiting"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
