"""Post-training defenses (``dift-defend``): CLP, B1 (filter + re-train), B2 (CLP on B1), on a tiny finished run."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from harness.datamodule import ContrastiveDataModule
from harness.defend import main as defend_main
from harness.experiment import load_run, prepare_data
from harness.pretrain import run
from tests.conftest import make_cfg

ATTACK = ("attack=sslbackdoor", "attack.rate=0.05", "attack.params.patch_size=24")


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_root):
    run_dir = tmp_path_factory.mktemp("defend") / "src"
    run(make_cfg(*ATTACK), run_dir)
    return run_dir


def test_clp_writes_a_run_directory_with_the_training_schema(source):
    out = source.with_name("clp")
    defend_main([str(source), "defense=clp", "defense.u=2.0", f"hydra.run.dir={out}"])
    metrics = json.loads((out / "metrics.json").read_text())
    src = json.loads((source / "metrics.json").read_text())
    assert {"acc_linear", "acc_knn", "asr_linear", "asr_knn"} <= set(metrics) and metrics["seed"] == src["seed"]
    block = metrics["defense"]
    assert block["name"] == "clp" and block["u"] == 2.0 and block["pruned_channels"] > 0
    assert set(block["time_s"]) == {"training", "pruning"}
    _, model = load_run(out)  # the pruned encoder, loadable like any run's
    for layer, channels in block["pruned"].items():
        bn = model.backbone.get_submodule(layer)
        assert torch.all(bn.weight[channels] == 0) and torch.all(bn.bias[channels] == 0)


def test_b1_filters_and_retrains_without_the_ground_truth_file_and_b2_reuses_it(source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    (src / "poisoned_indexes.npy").unlink()  # no defense may need it
    defend_main([str(src), "defense=b1", "defense.filter.eps_quantile=0.1"])
    b1 = src.with_name("src_b1")
    metrics = json.loads((b1 / "metrics.json").read_text())
    block = metrics["defense"]
    assert block["name"] == "b1" and set(block["time_s"]) == {"training", "detection", "retraining"}
    assert block["detected"] == len((b1 / "b1_detected.csv").read_text().splitlines()) - 1
    assert {"precision", "recall", "fpr"} <= set(block)  # scored against the truth rebuilt from the config
    assert yaml.safe_load((b1 / "config.yaml").read_text())["train_exclude"] == str((b1 / "b1_detected.csv").resolve())
    stamp = (b1 / "metrics.json").stat().st_mtime
    defend_main([str(src), "defense=b2"])
    b2 = json.loads((src.with_name("src_b2") / "metrics.json").read_text())["defense"]
    assert (b1 / "metrics.json").stat().st_mtime == stamp  # B1 reused, not re-trained
    assert b2["name"] == "b2" and b2["detected"] == block["detected"] and "pruning" in b2["time_s"]


def test_b1_with_nothing_flagged_keeps_the_source_encoder_instead_of_training_it_again(source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    b1 = tmp_path / "b1"
    defend_main([str(src), "defense=b1", "defense.filter.dominance=1.0", f"hydra.run.dir={b1}"])  # no cluster dominates
    metrics = json.loads((b1 / "metrics.json").read_text())
    block, src_metrics = metrics["defense"], json.loads((src / "metrics.json").read_text())
    assert block["detected"] == 0 and block["retrained"] is False and block["time_s"]["retraining"] == 0.0
    assert {k: metrics[k] for k in ("acc_linear", "asr_linear", "machine")} == \
        {k: src_metrics[k] for k in ("acc_linear", "asr_linear", "machine")}
    assert not (b1 / "pretrain.log").exists()  # no training run was started there
    defended, original = load_run(b1)[1].state_dict(), load_run(src)[1].state_dict()
    assert all(torch.equal(defended[k], original[k]) for k in original)  # B2 prunes the source's encoder
    defend_main([str(src), "defense=b2", f"defense.b1_run={b1}", f"hydra.run.dir={tmp_path / 'b2'}"])
    assert json.loads((tmp_path / "b2" / "metrics.json").read_text())["defense"]["detected"] == 0


def test_the_retraining_data_never_yields_an_excluded_index(data_root):
    cfg = make_cfg(*ATTACK)
    data = prepare_data(cfg)
    excluded = np.arange(0, 512, 3)
    dm = ContrastiveDataModule(data.ssl_train, cfg.data, cfg.augment, 64, 0, exclude=excluded)
    seen = [int(i) for batch in dm.train_dataloader() for i in batch[0]]
    assert len(seen) == (512 - len(excluded)) // 64 * 64 and not set(seen) & set(excluded.tolist())


def test_a_defense_refuses_an_unfinished_run_and_pretraining_refuses_a_post_training_defense(source, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(source, unfinished)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(SystemExit) as e:
        defend_main([str(unfinished), "defense=clp"])
    assert e.value.code == 2 and "is not a finished dift-pretrain run (metrics.json missing)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        defend_main([str(source), "defense=dift"])
    assert "defense=clp|b1|b2" in capsys.readouterr().err
    with pytest.raises(Exception, match="defends a finished run"):
        run(make_cfg("defense=b1"), tmp_path / "refused")


def test_filter_flags_and_scores_without_retraining(source):
    out = source.with_name("filter")
    defend_main([str(source), "defense=filter", "defense.filter.algorithm=optics", "defense.filter.eps_quantile=0.1",
                 f"hydra.run.dir={out}"])
    metrics = json.loads((out / "metrics.json").read_text())
    src = json.loads((source / "metrics.json").read_text())
    block = metrics["defense"]
    assert block["name"] == "filter" and block["filter"]["algorithm"] == "optics"
    assert set(block["time_s"]) == {"training", "detection"} and {"precision", "recall", "fpr"} <= set(block)
    assert block["detected"] == len((out / "filter_detected.csv").read_text().splitlines()) - 1
    assert all(metrics[k] == src[k] for k in ("acc_linear", "asr_linear"))  # the encoder is the source's
    assert not (out / "checkpoints").exists()
