"""DIFT inside training (built-in methods through the harness): filtering, queue, LR restart, resume, DDP."""

import csv
import json
import subprocess

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from dift_plugin import detector as detector_module
from dift_plugin import spreading as spreading_module
from dift_plugin.anchors import AnchorFilterResult
from dift_plugin.errors import DiftUserError
from harness.datamodule import ContrastiveDataModule
from harness.defense import dift_data
from harness.experiment import prepare_data
from harness.methods import build_method
from harness.pretrain import build_trainer, run
from tests.conftest import make_cfg
from tests.recorder import Recorder
from tests.test_pretrain import cli, kill_and_resume

# A 24x24 trigger on 5 % of 512 images: dense enough for DIFT to flag from the first epochs of a tiny model;
# DIFT decides after the third epoch at the latest, on whatever set it has then (stable or not).
FORCED = ("defense=dift", "dift.stop_epoch=2", "dift.detector.min_rounds=1", "dift.unstable_at_stop=act",
          "attack=sslbackdoor", "attack.rate=0.05", "attack.params.patch_size=24")


def fit(cfg, run_dir):
    """Train ``cfg`` with DIFT in this process; returns the model, a Recorder of what training saw, the data."""
    pl.seed_everything(int(cfg.seed), verbose=False)
    data = prepare_data(cfg)
    model = build_method(cfg)
    if getattr(model, "dift_cfg", None) is not None:  # a method built without DIFT has none
        model.dift_data = dift_data(cfg, model.dift_cfg, data)
    dm = ContrastiveDataModule(data.ssl_train, cfg.data, cfg.augment, int(cfg.optimizer.batch_size), int(cfg.seed))
    recorder = Recorder()
    build_trainer(cfg, run_dir, [recorder]).fit(model, datamodule=dm)
    return model, recorder, data


@pytest.fixture(scope="module")
def moco_with_dift(tmp_path_factory, data_root):
    cfg = make_cfg(*FORCED, "method=moco", "method.queue_size=192", "trainer.max_epochs=5",
                   "dift.restart_warmup_epochs=0")
    return fit(cfg, tmp_path_factory.mktemp("moco_dift"))


def test_detected_samples_are_never_trained_on_after_filtering(moco_with_dift):
    model, rec, data = moco_with_dift
    state = model.dift_state
    assert state.phase == "filtered" and state.decided_epoch == 2 and len(state.detected) > 0
    detected = set(state.detected)
    kept = len(data.ssl_train) - len(detected)
    for epoch in (3, 4):
        seen = rec.indexes[epoch]
        assert not detected & set(seen)
        assert len(seen) == len(set(seen)) == kept // 64 * 64  # every kept sample at most once, full batches
    assert detected & set(rec.indexes[0])  # before filtering they were trained on


def test_moco_queue_is_reset_and_batches_keep_its_constraint(moco_with_dift):
    model, rec, _ = moco_with_dift
    after = rec.epoch_start[3]
    assert after["queue_ptr"] == 0 and rec.epoch_start[2]["queue_ptr"] != 0
    assert not torch.allclose(after["queue"], rec.epoch_start[2]["queue"])
    assert after["synced"] and not rec.epoch_start[2]["synced"]  # key encoder = fine-tuned query encoder
    assert all(192 % size == 0 for epoch in (3, 4) for size in rec.sizes[epoch])


def test_the_lr_schedule_restarts_at_its_initial_value(moco_with_dift):
    model, rec, _ = moco_with_dift
    initial = model.trainer.optimizers[0].param_groups[0]["initial_lr"]
    assert rec.lrs[2][-1] < 0.9 * initial  # decayed before the restart
    assert rec.lrs[3][0] == pytest.approx(initial)  # restarted (no warm-up in this test)
    assert rec.lrs[4][-1] < rec.lrs[3][0]  # and decays again over the remaining epochs
    restart = model.dift_state.restart
    assert restart["total"] == 2 * len(rec.sizes[3]) and restart["warmup"] == 0


def test_tau_follows_the_epochs_when_filtering_shortens_them(moco_with_dift):
    model, rec, _ = moco_with_dift
    n = len(rec.sizes[4])  # fewer batches than before filtering
    assert n < len(rec.sizes[0])
    assert float(model.trainer.logged_metrics["tau"]) == pytest.approx(model.tau((4 + (n - 1) / n) / 5))


def test_history_has_set_sizes_scores_and_timings(moco_with_dift):
    model, _, data = moco_with_dift
    summary = model.dift_summary()
    rows = summary["history"]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[-1]["phase"] == "filtered"
    assert summary["decided_epoch"] == 2 and rows[-1]["detected"] == summary["detected"]
    assert not any("detected" in key for r in rows[:-1] for key in r)  # spread once, at the decision
    assert rows[-1]["detected_precision"] > 0.5 and rows[-1]["detected_recall"] > 0.5
    for key in ("candidates", "kept", "stable", "detected", "stable_precision", "stable_recall", "detected_precision",
                "detected_recall", "detected_fpr", "poisoned_median_rank_pct", "poisoned_top_share"):
        assert key in rows[-1]
    assert rows[-1]["candidates"] == round(0.05 * len(data.ssl_train))
    assert set(summary["time_s"]) >= {"embedding", "detection", "spreading", "finetuning"}
    # Eq. 7 descended (its lambda term may shrink the features, so the mean distance alone can fall)
    assert summary["finetune"]["loss_last"] < summary["finetune"]["loss_first"]
    assert not summary["finetune"]["diverged"]


def test_a_stable_set_decides_before_stop_epoch_and_the_run_can_keep_its_schedule_and_skip_fine_tuning(
        tmp_path, data_root):
    cfg = make_cfg(*FORCED, "trainer.max_epochs=5", "dift.stop_epoch=3", "dift.detector.patience=1",
                   "dift.detector.tolerance=1.0", "dift.restart_lr=false", "dift.finetune.epochs=0")
    model, rec, _ = fit(cfg, tmp_path)
    state = model.dift_state
    assert state.phase == "filtered" and state.decided_epoch == 1 and [r["epoch"] for r in state.history] == [0, 1]
    assert state.history[-1]["is_stable"] == 1 and len(state.detected) > 0
    assert state.finetune is None and not any(k.startswith("finetune_") for k in state.history[-1])
    assert state.restart is None and rec.schedulers[2] == rec.schedulers[0]  # the run's own schedule, continued
    assert not set(state.detected) & set(rec.indexes[2] + rec.indexes[3] + rec.indexes[4])


@pytest.mark.parametrize("cause", ["the filter keeps nothing", "the set is never stable"])
def test_nothing_detected_leaves_training_as_it_was(cause, tmp_path, data_root, monkeypatch):
    """The clean phase: no fine-tuning, no restart, no filtering — when the anchor filter never keeps anything, or
    when the intersected set never becomes stable by the stop epoch (``unstable_at_stop=skip``, the default)."""
    if cause == "the filter keeps nothing":
        monkeypatch.setattr(detector_module, "filter_by_anchors",
                            lambda *a, **k: AnchorFilterResult(np.zeros(0, dtype=np.int64), "kept nothing (test)"))
        extra = ()
    else:  # 3 detection epochs cannot make 5 stable ones in a row
        extra = ("dift.unstable_at_stop=skip", "dift.detector.patience=5")
    model, rec, data = fit(make_cfg(*FORCED, "trainer.max_epochs=4", *extra), tmp_path)
    state = model.dift_state
    assert state.phase == "clean" and state.decided_epoch == 2 and state.detected == []
    assert (state.history[-1]["stable"] > 0) == (cause == "the set is never stable")  # there was a set to skip
    assert state.finetune is None and state.restart is None and "finetuning" not in state.timings
    assert rec.schedulers[3] == rec.schedulers[0]
    assert sorted(rec.indexes[3]) == list(range(len(data.ssl_train)))  # every sample still trained on


def test_a_run_where_dift_detects_nothing_ends_with_the_undefended_runs_weights(tmp_path, data_root):
    """DIFT on clean data costs no accuracy when it detects nothing: its embedding passes (eval mode: the batch-norm
    statistics untouched) leave the training -- batches, augmentations, weights, buffers -- an undefended run's."""
    common = ("trainer.max_epochs=3", "attack=sslbackdoor", "attack.rate=0")
    defended, _, _ = fit(make_cfg(*common, "defense=dift", "dift.stop_epoch=1"), tmp_path / "dift")
    undefended, _, _ = fit(make_cfg(*common), tmp_path / "none")
    assert defended.dift_state.phase == "clean" and len(defended.dift_state.history) == 2
    theirs = undefended.state_dict()
    for name, tensor in defended.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


def test_the_papers_spreading_is_refused_before_training_on_a_set_it_cannot_hold(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr(spreading_module, "SKLEARN_MAX_SAMPLES", 100)
    with pytest.raises(DiftUserError, match="spreading=sklearn holds a dense 512 x 512 kernel: it is limited to 100"):
        run(make_cfg(*FORCED, "trainer.max_epochs=3", "dift.detector.spreading=sklearn"), tmp_path)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # stopped before the first epoch ended


def test_harness_run_writes_dift_results(tmp_path, data_root):
    metrics = run(make_cfg(*FORCED, "trainer.max_epochs=4"), tmp_path)
    assert metrics["defense"] == "dift" and metrics["dift"]["phase"] == "filtered"
    with (tmp_path / "dift_detected.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["dift"]["detected"] > 0 and rows[0]["path"].endswith(".jpg")
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "dift/detected_recall" in header and "dift/stable_precision" in header
    detected = {int(r["index"]) for r in rows}
    poisoned = set(np.load(tmp_path / "poisoned_indexes.npy").tolist())
    assert metrics["dift"]["recall"] == pytest.approx(len(detected & poisoned) / len(poisoned), abs=1e-4)
    assert metrics["dift"]["precision"] == pytest.approx(len(detected & poisoned) / len(detected), abs=1e-4)
    assert metrics["dift_time_s"] > 0


def test_a_bad_dift_block_stops_the_cli_before_training(tmp_path, data_root):
    proc = subprocess.run(cli(tmp_path / "bad", "defense=dift", "+dift.finetune.steps=5"), cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: unknown key(s) dift.finetune.steps; allowed: batch_size, epochs, epsilon" in proc.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()
    with pytest.raises(DiftUserError, match="dift.space must be one of projector, backbone"):
        run(make_cfg("defense=dift", "dift.space=pixels"), tmp_path / "bad2")
    with pytest.raises(DiftUserError, match=r"dift.stop_epoch=2 is not an epoch of this run .*max_epochs=2"):
        run(make_cfg("defense=dift", "dift.stop_epoch=2"), tmp_path / "bad3")  # would end undecided
    assert not (tmp_path / "bad3").exists()


def test_killed_run_resumes_to_the_same_detected_set(tmp_path, data_root):
    extra = (*FORCED, "trainer.max_epochs=5", "dift.stop_epoch=3", "method=moco", "method.queue_size=128")
    subprocess.run(cli(tmp_path / "straight", *extra), check=True, cwd=tmp_path, capture_output=True)

    killed = tmp_path / "killed"
    kill_and_resume(killed, extra, tmp_path)  # killed while DIFT is still detecting (it decides at epoch 3)

    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["resumed"] and a["dift"]["detected"] > 0
    assert (killed / "dift_detected.csv").read_text() == (tmp_path / "straight" / "dift_detected.csv").read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time_", "finetune_seconds"))} for r in rows]  # noqa: E731
    assert strip(b["dift"]["history"]) == strip(a["dift"]["history"])
    assert b["acc_linear"] == pytest.approx(a["acc_linear"], abs=1e-6)


def test_a_run_killed_after_filtering_resumes_filtered(tmp_path, data_root):
    extra = (*FORCED, "trainer.max_epochs=4", "dift.stop_epoch=0")  # decides after epoch 0, before any checkpoint
    subprocess.run(cli(tmp_path / "straight", *extra), check=True, cwd=tmp_path, capture_output=True)
    killed = tmp_path / "killed"
    kill_and_resume(killed, extra, tmp_path)

    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["dift"]["phase"] == "filtered" and a["dift"]["decided_epoch"] == 0 and a["dift"]["detected"] > 0
    assert b["resumed"] and b["dift"]["decided_epoch"] == 0 and len(b["dift"]["history"]) == 1
    assert (killed / "dift_detected.csv").read_text() == (tmp_path / "straight" / "dift_detected.csv").read_text()
    assert b["acc_linear"] == pytest.approx(a["acc_linear"], abs=1e-6)  # filtered and restarted as before the kill


def test_ddp_ranks_share_one_detected_set(tmp_path, data_root):
    run_dir = tmp_path / "ddp"
    extra = (*FORCED, "trainer.max_epochs=4", "trainer.devices=2", "trainer.strategy=ddp",
             "trainer.accelerator=cpu", "method=moco", "method.queue_size=128")
    proc = subprocess.run(cli(run_dir, *extra), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    detected = metrics["dift"]["detected"]
    assert metrics["dift"]["phase"] == "filtered" and detected > 0
    # Epochs 0-2: 512 / (2 x 64) = 4 steps; epoch 3 on the kept samples, equally on both ranks (else DDP hangs).
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 12 + -(-(512 - detected) // 2) // 64
    with (run_dir / "dift_detected.csv").open() as f:
        assert [int(r["index"]) for r in csv.DictReader(f)] == ckpt["dift"]["detected"]
