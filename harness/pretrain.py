"""``dift-pretrain``: contrastive pretraining on (optionally poisoned) data, then ACC/ASR evaluation.

Writes into the run directory (``hydra.run.dir``): ``config.yaml``, ``checkpoints/last.ckpt``, ``logs/metrics.csv``
and ``metrics.json``. Starting again with the same run directory resumes from the last checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import hydra
import lightning.pytorch as pl
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

import attacks
from dift_plugin.config import DIFTConfig, DIFTConfigError
from dift_plugin.errors import DiftUserError
from dift_plugin.images import ImageSet
from dift_plugin.mixin import dift_config_of
from harness.augment import Normalize
from harness.callbacks import AtomicCheckpointIO, EpochStats
from harness.config import check_choice, without_added_defaults
from harness.data import pin_data_root
from harness.datamodule import ContrastiveDataModule
from harness.defense import dift_data
from harness.evaluate import LINEAR_FEATURES
from harness.experiment import evaluate_backbone, prepare_data
from harness.machine import machine
from harness.methods import build_method
from harness.monitor import AttackMonitor
from harness.optim import OPTIMIZERS, SCHEDULES

POST_TRAINING = ("clp", "b1", "b2", "filter")  # defenses of a finished run (harness.defend), not of a training

warnings.filterwarnings("ignore", ".*does not have many workers.*")

PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "kornia", "scikit-learn", "numpy", "dift")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON through a temporary file, so readers never see a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def write_detected(path: Path, detected: list[int], train: ImageSet) -> None:
    """The samples DIFT removed: training-set position, position in the source dataset, file (if any)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "source_index", "path"])
        for i in detected:
            w.writerow([i, int(train.source_index[i]), train.paths[i] if train.paths else ""])
    os.replace(tmp, path)


def read_excluded(path: str | None, n: int) -> np.ndarray | None:
    """The ``index`` column of the CSV ``train_exclude`` (training-set positions never trained on)."""
    if path is None:
        return None
    try:
        with open(path, newline="") as f:
            index = np.array([int(row["index"]) for row in csv.DictReader(f)], dtype=np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise DiftUserError(f"train_exclude={path}: need a readable CSV with an integer `index` column ({e})") from e
    if len(index) and (index.min() < 0 or index.max() >= n):
        raise DiftUserError(f"train_exclude={path}: indexes must lie in [0, {n}), the training set's positions")
    return index


def check_config(cfg: DictConfig) -> DIFTConfig | None:
    """Fail before any data is read on values that would only break deep inside training; returns DIFT's config
    (None without DIFT)."""
    if cfg.defense.name in POST_TRAINING:
        raise DiftUserError(f"defense={cfg.defense.name} defends a finished run: train without a defense, then "
                            f"`dift-defend RUN_DIR defense={cfg.defense.name}`")
    for key in ("optimizer.batch_size", "trainer.max_epochs"):
        if int(OmegaConf.select(cfg, key)) < 1:
            raise DiftUserError(f"{key} must be a positive integer, got {OmegaConf.select(cfg, key)}")
    for key, allowed in (("optimizer.name", OPTIMIZERS), ("optimizer.schedule", SCHEDULES),
                         ("eval.linear_features", LINEAR_FEATURES)):
        check_choice(key, OmegaConf.select(cfg, key), allowed)
    try:
        dift = dift_config_of(cfg)
        if dift is not None:
            dift.check_run_length(int(cfg.trainer.max_epochs))
        return dift
    except DIFTConfigError as e:
        raise DiftUserError(str(e)) from e


def same_run(a: DictConfig, b: DictConfig) -> bool:
    """Whether two resolved configs train the same run: equal but for keys added later at their default
    (``harness.config.ADDED_AT_DEFAULT``), so a run started before a key existed resumes after it."""
    return OmegaConf.to_container(without_added_defaults(a)) == OmegaConf.to_container(without_added_defaults(b))


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Save the resolved config; return the checkpoint to resume from, refusing a run dir of another config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    saved = run_dir / "config.yaml"
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists() and saved.exists() and not same_run(OmegaConf.load(saved), OmegaConf.create(resolved)):
        raise DiftUserError(
            f"{run_dir} holds a run with a different config ({saved}); resume it with the same settings, "
            f"or start a new run with another hydra.run.dir"
        )
    saved.write_text(resolved)
    return last if last.exists() else None


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    # One file, rewritten after every epoch (no metric is monitored, so "top-1" is the latest).
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", every_n_epochs=1,
                                 enable_version_counter=False)
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    # The bar redraws a line per step: on a terminal only, never into a log file (dift-bench's cell.log, nohup)
    settings["enable_progress_bar"] = bool(settings.get("enable_progress_bar", True)) and sys.stdout.isatty()
    return pl.Trainer(
        **settings,
        default_root_dir=str(run_dir),
        logger=CSVLogger(str(run_dir), name="logs", version=""),
        callbacks=[*callbacks, checkpoint],
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
    )


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Pretrain as configured, evaluate on rank 0 and write ``metrics.json``; returns the metrics."""
    dift = check_config(cfg)
    pin_data_root(cfg)
    attack = attacks.from_config(cfg.attack)
    started = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data = prepare_data(cfg, attack)
    train, test, ssl_train, poisoned_indexes = data.train, data.test, data.ssl_train, data.poisoned_indexes
    resume_from = prepare_run_dir(cfg, run_dir)
    if attack is not None:
        np.save(run_dir / "poisoned_indexes.npy", poisoned_indexes)  # ground truth, never shown to defenses

    model = build_method(cfg)
    if dift is not None:
        model.dift_data = dift_data(cfg, dift, data)
    if cfg.speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    datamodule = ContrastiveDataModule(ssl_train, cfg.data, cfg.augment, int(cfg.optimizer.batch_size), int(cfg.seed),
                                       data_on_device=bool(cfg.speed.data_on_device),
                                       channels_last=bool(cfg.speed.channels_last),
                                       exclude=read_excluded(cfg.get("train_exclude"), len(ssl_train)))
    stats = EpochStats()
    callbacks: list[pl.Callback] = [stats]
    if attack is not None:
        monitor = AttackMonitor(lambda backbone: evaluate_backbone(backbone, cfg, data), ssl_train.images,
                                poisoned_indexes, Normalize(list(cfg.data.mean), list(cfg.data.std)),
                                k=int(cfg.monitor.density_k), every_n_epochs=int(cfg.monitor.every))
        callbacks.append(monitor)
    trainer = build_trainer(cfg, run_dir, callbacks)
    fit_started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    fit_time = time.perf_counter() - fit_started
    if trainer.interrupted:
        print(f"interrupted: start the same command with hydra.run.dir={run_dir} to resume", file=sys.stderr)
        return {}
    if trainer.global_rank != 0:
        return {}

    # With an attack, the monitor has just evaluated the final encoder: reuse that row.
    last = monitor.history[-1] if attack is not None and monitor.history else None
    if last is not None and last["epoch"] == trainer.current_epoch - 1:
        metrics = {k: v for k, v in last.items() if k.startswith(("acc_", "asr_"))}
    else:
        metrics = evaluate_backbone(model.backbone, cfg, data)
    epochs = stats.history
    train_time = sum(e["time_s"] for e in epochs)
    metrics.update({
        "method": cfg.method.name, "dataset": cfg.data.name, "backbone": cfg.backbone.name, "seed": int(cfg.seed),
        "attack": cfg.attack.name, "defense": "dift" if dift is not None else cfg.defense.name,
        "poisoned_samples": len(poisoned_indexes),
        "train_samples": len(train), "test_samples": len(test), "epochs_trained": len(epochs),
        "s_per_epoch": round(train_time / max(1, len(epochs)), 3), "train_time_s": round(train_time, 1),
        "fit_time_s": round(fit_time, 1),
        "session_time_s": round(time.perf_counter() - started, 1), "resumed": resume_from is not None,
        "epochs": epochs, "versions": package_versions(), "machine": machine(),
    })
    if attack is not None:
        metrics["curve"] = monitor.history
    if dift is not None:
        write_detected(run_dir / "dift_detected.csv", model.dift_state.detected, ssl_train)
        metrics["dift"] = model.dift_summary()
        metrics["dift_time_s"] = round(sum(metrics["dift"]["time_s"].values()), 1)
    write_json(run_dir / "metrics.json", metrics)
    asr = f", ASR linear {metrics['asr_linear']:.2f} %, kNN {metrics['asr_knn']:.2f} %" if attack else ""
    found = f", DIFT detected {metrics['dift']['detected']} samples" if dift is not None else ""
    print(f"ACC linear {metrics['acc_linear']:.2f} %, kNN {metrics['acc_knn']:.2f} %{asr}{found} "
          f"-> {run_dir / 'metrics.json'}")
    return metrics


@hydra.main(config_path="../conf", config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except DiftUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
