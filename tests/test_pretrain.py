import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dift_plugin.errors import DiftUserError
from harness.config import pretrain_config
from harness.detect import main as detect_main
from harness.evaluate_run import main as evaluate_run_main
from harness.plot_curves import plot as plot_curves
from harness.pretrain import prepare_run_dir, run, same_run
from tests.conftest import TINY, make_cfg


def cli(run_dir, *extra):
    return [sys.executable, "-m", "harness.pretrain", *TINY, f"hydra.run.dir={run_dir}", *extra]


def kill_and_resume(run_dir, extra, cwd):
    """Start a run, ``kill -9`` it somewhere after its first checkpoint, then start it again to the end."""
    proc = subprocess.Popen(cli(run_dir, *extra), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before writing a checkpoint"
        time.sleep(0.02)
    time.sleep(0.5)  # kill somewhere inside a later epoch
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was killed"
    subprocess.run(cli(run_dir, *extra), check=True, cwd=cwd, capture_output=True)


def test_run_writes_config_metrics_logs_and_checkpoint(tmp_path, data_root):
    cfg = make_cfg("method=byol")
    metrics = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert 10.0 < saved["acc_linear"] <= 100.0 and 10.0 < saved["acc_knn"] <= 100.0  # well above chance (10 %)
    assert [e["epoch"] for e in saved["epochs"]] == [0, 1] and all(e["time_s"] > 0 for e in saved["epochs"])
    assert saved["seed"] == 0 and saved["versions"]["torch"] == torch.__version__.split("+")[0]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["method"]["name"] == "byol"
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "train_loss_epoch" in (tmp_path / "logs" / "metrics.csv").read_text()


def test_killed_run_resumes_to_the_same_result(tmp_path, data_root):
    extra = ("trainer.max_epochs=6", "method=moco", "method.queue_size=128")
    subprocess.run(cli(tmp_path / "straight", *extra), check=True, cwd=tmp_path, capture_output=True)

    killed = tmp_path / "killed"
    kill_and_resume(killed, extra, tmp_path)

    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["resumed"] and not a["resumed"]
    assert [e["epoch"] for e in b["epochs"]] == list(range(6))
    assert [e["loss"] for e in b["epochs"]] == pytest.approx([e["loss"] for e in a["epochs"]], rel=1e-5)
    for key in ("acc_linear", "acc_knn"):
        assert b[key] == pytest.approx(a[key], abs=1e-6)


def test_resuming_with_another_config_is_refused(tmp_path, data_root):
    run(make_cfg("trainer.max_epochs=1"), tmp_path)
    with pytest.raises(DiftUserError, match="different config"):
        run(make_cfg("trainer.max_epochs=1", "seed=5"), tmp_path)


def test_a_run_started_before_a_key_existed_resumes_while_the_key_holds_its_default(tmp_path):
    # the cpu grid's SimCLR sslbackdoor-paper cell was started before attack.params.opacity existed and was refused
    cfg = make_cfg("attack=sslbackdoor", "method=byol")
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    before = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))
    del before["attack"]["params"]["opacity"], before["method"]["predictor"], before["eval"]["linear_features"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(before))
    assert prepare_run_dir(cfg, tmp_path) == last
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(before))
    for other in (make_cfg("attack=sslbackdoor", "method=byol", "attack.params.opacity=0.5"),
                  make_cfg("attack=sslbackdoor", "method=byol", "method.predictor=linear"),
                  make_cfg("attack=sslbackdoor", "method=byol", "eval.linear_features=l2")):
        with pytest.raises(DiftUserError, match="different config"):
            prepare_run_dir(other, tmp_path)


def test_a_corruptencoder_run_from_before_trigger_position_is_the_same_run_at_the_centre():
    def resolved(*overrides):  # as a run directory saves it
        return OmegaConf.create(OmegaConf.to_container(make_cfg("attack=corruptencoder", *overrides), resolve=True))

    before = resolved()  # the CPU preset's placement is `random` now; a run saved without the key was at the centre
    del before.attack.params.trigger_position
    assert same_run(before, resolved("attack.params.trigger_position=center"))
    assert not same_run(before, resolved())


def test_corruptencoder_at_the_cpu_preset_puts_its_trigger_anywhere_in_its_half_and_the_paper_at_the_centre():
    cpu, paper = (pretrain_config([*preset, "attack=corruptencoder"]).attack for preset in (["preset=cpu"], []))
    assert (cpu.rate, cpu.params.patch_size, cpu.params.trigger_position) == (0.1, 8, "random")
    assert (paper.rate, paper.params.patch_size, paper.params.trigger_position) == (0.01, 5, "center")


def test_cli_errors_are_clear(tmp_path):
    bad_method = subprocess.run(cli(tmp_path / "a", "method=swav"), cwd=tmp_path, capture_output=True, text=True)
    assert bad_method.returncode != 0
    assert "Could not find 'method/swav'" in bad_method.stderr and "simclr" in bad_method.stderr

    missing = subprocess.run(cli(tmp_path / "b", f"data.root={tmp_path}/no-data"), cwd=tmp_path,
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert f"error: dataset 'cifar10' not found under {tmp_path}/no-data" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.fixture(scope="module")
def attacked_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("attacked")
    cfg = make_cfg("attack=sslbackdoor", "attack.rate=0.05", "attack.params.patch_size=8", "monitor.every=1")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = run(cfg, run_dir)
    return run_dir, metrics, printed.getvalue()


def test_attacked_run_reports_asr_and_density_of_the_poisoned(attacked_run, data_root):
    run_dir, metrics, printed = attacked_run
    poisoned = np.load(run_dir / "poisoned_indexes.npy")
    assert metrics["poisoned_samples"] == len(poisoned) == 25  # 5 % of 512
    assert {"asr_linear", "asr_knn", "asr_linear_all", "asr_knn_all"} <= set(metrics)
    rows = metrics["curve"]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[-1]["asr_knn"] == metrics["asr_knn"]
    for space in ("backbone", "projector"):  # the share of the 25 poisoned among the 25 densest: a count / 25
        assert rows[-1][f"{space}_top_share"] * 25 == pytest.approx(round(rows[-1][f"{space}_top_share"] * 25))
        assert f"{space}_median_rank_pct" in rows[-1]
    plot_curves([run_dir], run_dir / "curves.png")
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # each checkpoint is printed as it happens, so a long run shows whether the backdoor is implanting
    assert [line.split(":")[0] for line in printed.splitlines() if line.startswith("monitor")] == \
        ["monitor epoch 0", "monitor epoch 1"]
    assert f"ASR lin {metrics['asr_linear']:.1f} / kNN {metrics['asr_knn']:.1f} %" in printed


def test_the_monitor_period_does_not_change_the_trained_encoder(attacked_run, tmp_path, data_root):
    # so dift-bench leaves monitor.every out of its cell keys (harness.bench.UNKEYED)
    run_dir, metrics, _ = attacked_run
    cfg = make_cfg("attack=sslbackdoor", "attack.rate=0.05", "attack.params.patch_size=8", "monitor.every=2")
    with contextlib.redirect_stdout(io.StringIO()):
        other = run(cfg, tmp_path)
    assert [r["epoch"] for r in other["curve"]] == [1] and other["curve"][-1] == metrics["curve"][-1]
    weights = [torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
               for d in (run_dir, tmp_path)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_dift_detect_audits_a_run(attacked_run, data_root):
    run_dir = attacked_run[0]
    detect_main([str(run_dir)])
    summary = json.loads((run_dir / "detect" / "summary.json").read_text())
    assert summary["true_poisoned"] == 25 and {"precision", "recall"} <= set(summary["after_spreading"])
    assert (run_dir / "detect" / "flagged.csv").read_text().startswith("index,sample,density,min_dist,stage")


def test_evaluate_run_reproduces_the_run_and_takes_other_triggers(attacked_run, data_root, capsys):
    run_dir, metrics, _ = attacked_run
    evaluate_run_main([str(run_dir), "attack.rate=0.05", "--out", str(run_dir / "again.json")])
    again = json.loads((run_dir / "again.json").read_text())
    for key in ("acc_linear", "acc_knn", "asr_linear", "asr_knn"):
        assert again[key] == pytest.approx(metrics[key])
    evaluate_run_main([str(run_dir), "attack=ctrl", "attack.params.positions=[7,15]", "--out", str(run_dir / "c.json")])
    ctrl = json.loads((run_dir / "c.json").read_text())
    assert ctrl["attack"]["name"] == "ctrl" and ctrl["attack"]["params"]["positions"] == [7, 15]
    assert ctrl["acc_linear"] == pytest.approx(metrics["acc_linear"])
    evaluate_run_main([str(run_dir), "eval.linear_features=l2", "--out", str(run_dir / "l2.json")])
    assert json.loads((run_dir / "l2.json").read_text())["asr_knn"] == pytest.approx(metrics["asr_knn"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        evaluate_run_main([str(run_dir), "eval.linear_features=l1"])
    assert e.value.code == 2 and "eval.linear_features=l1 is not known: choose one of raw, l2" in capsys.readouterr().err


def test_no_poison_control_still_measures_asr(tmp_path, data_root):
    metrics = run(make_cfg("attack=ctrl", "attack.rate=0"), tmp_path)
    assert metrics["poisoned_samples"] == 0 and "asr_linear" in metrics
    assert "asr_linear" in metrics["curve"][-1] and "projector_top_share" not in metrics["curve"][-1]


def test_ddp_on_two_cpu_processes_shards_the_data(tmp_path, data_root):
    run_dir = tmp_path / "ddp"
    extra = ("trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "method=moco",
             "method.queue_size=128")
    proc = subprocess.run(cli(run_dir, *extra), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 2 and metrics["acc_linear"] > 10.0
    # 512 samples / (2 ranks x batch 64) = 4 steps per epoch, half of a single process's 8.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8


@pytest.mark.parametrize("terminal", [True, False])
def test_the_progress_bar_is_drawn_on_a_terminal_only(tmp_path, monkeypatch, terminal):
    # output redirected to a file (dift-bench's cell.log, nohup) would get a redrawn line per step
    from harness.pretrain import build_trainer

    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    trainer = build_trainer(make_cfg("trainer.enable_progress_bar=true"), tmp_path, [])
    assert (trainer.progress_bar_callback is not None) == terminal
    assert build_trainer(make_cfg("trainer.enable_progress_bar=false"), tmp_path, []).progress_bar_callback is None
