"""``dift-defend``: a post-training defense of a finished ``dift-pretrain`` run, written as a run directory of its own.

    dift-defend RUN_DIR defense=clp                     # CLP-prune the run's encoder
    dift-defend RUN_DIR defense=b1 hydra.run.dir=OUT    # DBSCAN filter, then re-train without the flagged samples
    dift-defend RUN_DIR defense=b2 defense.u=2.5        # CLP on B1's re-trained encoder (runs B1 first if needed)
    dift-defend RUN_DIR defense=filter defense.filter.algorithm=optics   # detection alone: flag and score

The source run is never trained again: its encoder, config and data (rebuilt from the config) are read. The
output directory (default ``RUN_DIR_<defense>``) holds ``config.yaml``, ``metrics.json`` with the schema of a
training run (``acc_linear``, ``acc_knn``, ``asr_linear``, ``asr_knn``, ...) plus a ``defense`` block (what was
flagged or pruned, precision / recall / FPR against the true poisoned samples, seconds per phase) and the
defended encoder in ``checkpoints/last.ckpt``. The true poisoned indexes only score a detection: no defense
reads them. B1's re-training is an ordinary, resumable training run in the output directory.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from baselines.clp import clp_prune
from baselines.density_filter import density_filter
from dift_plugin.errors import DiftUserError
from dift_plugin.scores import detection_scores
from harness.augment import Normalize
from harness.config import CONF_DIR
from harness.data import pin_data_root
from harness.experiment import RunData, evaluate_backbone, load_run, prepare_data
from harness.machine import machine
from harness.monitor import embedding_spaces
from harness.pretrain import POST_TRAINING, run, write_detected, write_json

SCORES = ("acc_linear", "acc_knn", "asr_linear", "asr_knn")
IDENTITY = ("method", "dataset", "backbone", "seed", "attack", "poisoned_samples", "train_samples", "test_samples")


def finished_run(run_dir: Path) -> dict:
    """The metrics of a finished ``dift-pretrain`` run, or a clear error."""
    for name in ("config.yaml", "checkpoints/last.ckpt", "metrics.json"):
        if not (run_dir / name).exists():
            raise DiftUserError(f"{run_dir} is not a finished dift-pretrain run ({name} missing): a post-training "
                                "defense needs a run that trained to the end (resume it first)")
    return json.loads((run_dir / "metrics.json").read_text())


def defense_config(overrides: list[str]) -> DictConfig:
    """``defense=NAME`` and ``defense.KEY=VALUE`` overrides over ``conf/defense/NAME.yaml``."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("defense=")]
    if len(names) != 1 or names[0] not in POST_TRAINING:
        raise DiftUserError(f"say which defense, once: defense={'|'.join(POST_TRAINING)} (DIFT runs inside "
                            "training: dift-pretrain defense=dift)")
    cfg = OmegaConf.load(CONF_DIR / "defense" / f"{names[0]}.yaml")
    OmegaConf.set_struct(cfg, True)
    rest = [o.removeprefix("defense.") for o in overrides if o.startswith("defense.")]
    unknown = [o for o in overrides if not o.startswith(("defense=", "defense.", "hydra.run.dir="))]
    if unknown:
        raise DiftUserError(f"unknown argument(s) {unknown}: give defense.KEY=VALUE or hydra.run.dir=DIR")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors name the key
        raise DiftUserError(f"defense={names[0]}: {e}") from e


def source_time(metrics: dict) -> float:
    return float(metrics.get("fit_time_s", metrics["train_time_s"]))


def detection_block(flagged: np.ndarray, data, n: int) -> dict:  # noqa: ANN001
    block = {"detected": len(flagged)}
    if data.attack is not None:
        block.update(detection_scores(flagged, data.poisoned_indexes, n))
    return block


def save_config(out: Path, cfg: DictConfig, dcfg: DictConfig) -> None:
    """The source run's config with this defense's block, as ``out/config.yaml``."""
    saved = copy.deepcopy(cfg)
    OmegaConf.set_struct(saved, False)
    saved.defense = dcfg
    (out / "config.yaml").write_text(OmegaConf.to_yaml(saved, resolve=True))


def save_encoder(out: Path, model: torch.nn.Module) -> None:
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, out / "checkpoints" / "last.ckpt")


def defend_clp(source: Path, dcfg: DictConfig, out: Path, before: dict | None = None) -> dict:
    """CLP on ``source``'s encoder. ``before``: the defense block of the run it came from (B2: B1's)."""
    src_metrics = finished_run(source)
    cfg, model = load_run(source)
    pin_data_root(cfg)
    data = prepare_data(cfg)
    started = time.perf_counter()
    pruned = clp_prune(model.backbone, u=float(dcfg.u))
    pruning = time.perf_counter() - started
    metrics = evaluate_backbone(model.backbone, cfg, data)
    times = dict(before["time_s"]) if before else {"training": source_time(src_metrics)}
    block = {**(before or {}), "name": str(dcfg.name), "source_run": str(source), "u": float(dcfg.u),
             "pruned": pruned, "pruned_channels": sum(len(v) for v in pruned.values()),
             "time_s": {**times, "pruning": round(pruning, 3)}}
    return write_defended(out, cfg, dcfg, src_metrics, metrics, block, model)


def flag(source: Path, dcfg: DictConfig) -> tuple[DictConfig, RunData, np.ndarray, dict]:
    """The density filter on ``source``'s embeddings: (config, data, flagged training positions, defense block)."""
    cfg, model = load_run(source)
    pin_data_root(cfg)
    data = prepare_data(cfg)
    started = time.perf_counter()
    x = embedding_spaces(model, data.ssl_train.images, Normalize(list(cfg.data.mean), list(cfg.data.std)))
    f = dcfg.filter
    try:
        found = density_filter(x[str(dcfg.space)].numpy(), str(f.algorithm), int(f.min_samples),
                               float(f.eps_quantile), float(f.dominance))
    except ValueError as e:
        raise DiftUserError(f"defense.filter: {e}") from e
    block = {"name": str(dcfg.name), "source_run": str(source), "space": str(dcfg.space),
             "filter": OmegaConf.to_container(f), "eps": found.eps, "reason": found.reason,
             **detection_block(found.flagged, data, len(data.ssl_train)),
             "time_s": {"detection": round(time.perf_counter() - started, 3)}}
    return cfg, data, found.flagged, block


def defend_filter(source: Path, dcfg: DictConfig, out: Path) -> dict:
    """Detection alone (no re-training): what the density filter flags, scored; ACC / ASR stay the source run's."""
    src_metrics = finished_run(source)
    cfg, data, flagged, block = flag(source, dcfg)
    out.mkdir(parents=True, exist_ok=True)
    write_detected(out / "filter_detected.csv", flagged.tolist(), data.ssl_train)
    save_config(out, cfg, dcfg)
    block["time_s"] = {"training": source_time(src_metrics), **block["time_s"]}
    result = {**source_scores(src_metrics), "defense": block}
    write_json(out / "metrics.json", result)
    return result


def source_scores(src_metrics: dict) -> dict:
    """The source run's identity and scores, and the machine they were measured on: the result of a defense that
    leaves the source's encoder as it is."""
    return {k: src_metrics[k] for k in (*IDENTITY, *SCORES, "machine") if k in src_metrics}


def defend_b1(source: Path, dcfg: DictConfig, out: Path) -> dict:
    """Density filter on ``source``'s embeddings, then re-training from scratch without the flagged samples."""
    src_metrics = finished_run(source)
    done = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    if "defense" in done:  # B1 finished earlier (B2 reuses it)
        return done
    cfg, data, flagged, block = flag(source, dcfg)
    out.mkdir(parents=True, exist_ok=True)
    flagged_csv = (out / "b1_detected.csv").resolve()
    write_detected(flagged_csv, flagged.tolist(), data.ssl_train)
    if len(flagged) == 0:  # re-training on the same data with the same seed would train the source run again
        print(f"B1: {block['reason']}; nothing flagged, so no re-training: the source run's encoder stands", flush=True)
        shutil.copytree(source / "checkpoints", out / "checkpoints", dirs_exist_ok=True)
        shutil.copyfile(source / "config.yaml", out / "config.yaml")
        result, retraining = source_scores(src_metrics), 0.0
    else:
        print(f"B1: {block['reason']}; re-training without {len(flagged)} samples", flush=True)
        retrain = copy.deepcopy(cfg)
        retrain.train_exclude = str(flagged_csv)
        result = run(retrain, out)
        retraining = source_time(result)
    block["time_s"] = {"training": source_time(src_metrics), **block["time_s"], "retraining": retraining}
    result["defense"] = {**block, "retrained": len(flagged) > 0}
    write_json(out / "metrics.json", result)
    return result


def write_defended(out: Path, cfg: DictConfig, dcfg: DictConfig, src_metrics: dict, metrics: dict, block: dict,
                   model: torch.nn.Module) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, cfg, dcfg)
    save_encoder(out, model)
    result = {**metrics, **{k: src_metrics[k] for k in IDENTITY if k in src_metrics}, "machine": machine(),
              "defense": block}
    write_json(out / "metrics.json", result)
    return result


def defend(source: Path, dcfg: DictConfig, out: Path) -> dict:
    if dcfg.name == "clp":
        return defend_clp(source, dcfg, out)
    if dcfg.name == "b1":
        return defend_b1(source, dcfg, out)
    if dcfg.name == "filter":
        return defend_filter(source, dcfg, out)
    b1_dir = Path(dcfg.b1_run) if dcfg.b1_run else source.with_name(f"{source.name}_b1")
    b1_cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "defense" / "b1.yaml"),
                             {"space": dcfg.space, "filter": dcfg.filter})
    b1 = defend_b1(source, b1_cfg, b1_dir)
    return defend_clp(b1_dir, dcfg, out, before={k: v for k, v in b1["defense"].items() if k != "name"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dift-defend", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="the run directory of a finished dift-pretrain run")
    parser.add_argument("overrides", nargs="+", help="defense=clp|b1|b2, defense.KEY=VALUE, hydra.run.dir=DIR")
    args = parser.parse_args(argv)
    try:
        dcfg = defense_config(args.overrides)
        if finished_run(args.source).get("defense") == "dift":
            raise DiftUserError(f"{args.source} was trained with DIFT: defend an undefended run")
        outs = [o.split("=", 1)[1] for o in args.overrides if o.startswith("hydra.run.dir=")]
        out = Path(outs[-1]) if outs else args.source.with_name(f"{args.source.name}_{dcfg.name}")
        result = defend(args.source, dcfg, out)
    except DiftUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    asr = f", ASR linear {result['asr_linear']:.2f} %, kNN {result['asr_knn']:.2f} %" if "asr_linear" in result else ""
    print(f"{dcfg.name}: ACC linear {result['acc_linear']:.2f} %, kNN {result['acc_knn']:.2f} %{asr} -> "
          f"{out / 'metrics.json'}")


if __name__ == "__main__":
    main()
