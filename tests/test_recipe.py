"""The training-recipe keys: optimizer.name (adam, adamw), optimizer.schedule (one_cycle), method.projector_bn,
method.joint_views, backbone.final_max_pool — and what DIFT's restart does with Adam and a one-cycle schedule."""

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from dift_plugin.errors import DiftUserError
from harness.backbones import SmallCNN
from harness.config import CONF_DIR
from harness.datamodule import ContrastiveDataModule
from harness.defense import dift_data
from harness.experiment import prepare_data
from harness.methods import METHODS, build_method
from harness.optim import build_optimizer, build_schedule
from harness.pretrain import build_trainer, run
from tests.conftest import make_cfg
from tests.recorder import Recorder
from tests.test_dift_training import FORCED


def opt_cfg(**kw):
    return OmegaConf.create({"name": "adam", "lr": 2e-3, "batch_size": 256, "weight_decay": 1e-6,
                             "schedule": "one_cycle", **kw})


def test_the_cpu_preset_trains_with_the_cpu_recipe_and_recipe_solo_undoes_it():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cpu = {m: compose(config_name="pretrain", overrides=["preset=cpu", f"method={m}"]) for m in METHODS}
        solo = {m: compose(config_name="pretrain", overrides=["preset=cpu", "recipe=solo", f"method={m}"])
                for m in METHODS}
        paper = compose(config_name="pretrain", overrides=["method=moco"])
    for m in METHODS:
        c = cpu[m]
        assert (c.optimizer.name, c.optimizer.lr, c.optimizer.schedule) == ("adam", 2e-3, "one_cycle")
        assert c.method.joint_views and c.method.projector_bn and c.backbone.final_max_pool
        assert list(c.data.mean) == [0, 0, 0] and list(c.data.std) == [1, 1, 1]
        s = solo[m]
        assert c.eval.linear_features == "l2" and s.eval.linear_features == "raw"  # the script's probe
        assert s.optimizer.schedule == "warmup_cosine" and not s.method.joint_views and not s.backbone.final_max_pool
        assert s.optimizer.name == {"simclr": "lars", "moco": "sgd", "byol": "lars"}[m]
        assert s.method.projector_bn == (m == "byol") and list(s.data.mean) == [0.4914, 0.4822, 0.4465]
    assert cpu["simclr"].method.temperature == 1.0 and solo["simclr"].method.temperature == 0.2
    # MoCo v2's negatives belong to the recipe too, and win over the preset's queue of 4,096 (preset_method)
    moco = cpu["moco"].method
    assert (moco.queue_size, moco.base_tau, moco.final_tau, moco.temperature) == (256, 0.9, 0.99, 1.0)
    moco = solo["moco"].method
    assert (moco.queue_size, moco.base_tau, moco.final_tau, moco.temperature) == (4096, 0.99, 0.999, 0.2)
    assert paper.optimizer.name == "sgd" and paper.optimizer.schedule == "warmup_cosine"  # preset=paper: solo-learn's
    assert paper.eval.linear_features == "raw"


def test_adam_and_adamw_decay_weights_only_and_scale_lr_with_the_batch():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        opt = build_optimizer(opt_cfg(name=name, batch_size=512), [model])
        assert type(opt) is cls and opt.param_groups[0]["lr"] == pytest.approx(4e-3)
        decay, no_decay = opt.param_groups
        assert [p.ndim for p in decay["params"]] == [2] and decay["weight_decay"] == 1e-6
        assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    with pytest.raises(DiftUserError, match="unknown optimizer 'rmsprop': choose one of sgd, lars, adam, adamw"):
        build_optimizer(opt_cfg(name="rmsprop"), [model])


def test_an_unknown_optimizer_schedule_or_probe_stops_the_run_before_any_data_is_read(tmp_path):
    with pytest.raises(DiftUserError, match="optimizer.name=rmsprop is not known: choose one of sgd, lars, adam"):
        run(make_cfg("optimizer.name=rmsprop", "data.root=/nonexistent"), tmp_path / "a")
    with pytest.raises(DiftUserError, match="optimizer.schedule=step is not known: choose one of warmup_cosine"):
        run(make_cfg("optimizer.schedule=step", "data.root=/nonexistent"), tmp_path / "b")
    with pytest.raises(DiftUserError, match="eval.linear_features=l1 is not known: choose one of raw, l2"):
        run(make_cfg("eval.linear_features=l1", "data.root=/nonexistent"), tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_one_cycle_warms_up_to_the_peak_and_anneals_far_below_it():
    opt = build_optimizer(opt_cfg(), [nn.Linear(4, 4)])
    schedule = build_schedule(opt_cfg(), opt, warmup_steps=5, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == pytest.approx(2e-3 / 25) and max(lrs) == pytest.approx(2e-3) and lrs.index(max(lrs)) == 4
    assert lrs[-1] < 2e-3 / 1000 and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.95, abs=1e-4)  # beta1 back up as the LR went down
    for warmup, total in ((0, 100), (0, 3), (50, 50)):  # no warm-up asked, a tiny run, all warm-up: still steps
        opt = build_optimizer(opt_cfg(), [nn.Linear(4, 4)])
        schedule = build_schedule(opt_cfg(), opt, warmup_steps=warmup, total_steps=total)
        for _ in range(total):
            opt.step()
            schedule.step()
        assert 0 < opt.param_groups[0]["lr"] <= 2e-3
    with pytest.raises(DiftUserError, match="unknown optimizer.schedule 'step': choose one of warmup_cosine, one_cycle"):
        build_schedule(opt_cfg(schedule="step"), opt, 5, 100)


def test_projector_batch_norm_is_a_switch_for_every_method(data_root):
    for name in METHODS:
        for flag in (False, True):
            model = build_method(make_cfg(f"method={name}", f"method.projector_bn={flag}"))
            assert any(isinstance(m, nn.BatchNorm1d) for m in model.projector.modules()) == flag, (name, flag)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_joint_views_normalise_over_both_views_in_one_pass(method, data_root):
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32) + 1.0]
    out = {}
    for joint in (False, True):
        torch.manual_seed(0)
        extra = ["method.queue_size=64"] if method == "moco" else []
        model = build_method(make_cfg(f"method={method}", f"method.joint_views={joint}", *extra)).train()
        out[joint] = model.forward_views(views)
        first_bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
        assert int(first_bn.num_batches_tracked) == (1 if joint else 2)  # one batch of 16 vs two of 8
        torch.testing.assert_close(out[joint][0]["feats"], model.forward(torch.cat(views))["feats"][:8]
                                   if joint else out[joint][0]["feats"])
    assert all(out[True][i]["z"].shape == out[False][i]["z"].shape for i in range(2))
    assert not torch.allclose(out[True][0]["feats"], out[False][0]["feats"])  # batch statistics differ


def test_final_max_pool_pools_the_last_stage_before_averaging():
    torch.manual_seed(0)
    plain, pooled = SmallCNN([4, 8]), SmallCNN([4, 8], final_max_pool=True)
    pooled.load_state_dict(plain.state_dict())  # no parameters added
    x = torch.randn(2, 3, 32, 32)
    last_stage = plain.net[:-2].eval()(x)
    torch.testing.assert_close(pooled.eval()(x), nn.functional.max_pool2d(last_stage, 2).mean(dim=(2, 3)))
    assert not torch.allclose(pooled(x), plain.eval()(x))


def test_dift_restarts_a_one_cycle_adam_run_in_its_own_shape_with_fresh_moments(tmp_path, data_root):
    cfg = make_cfg(*FORCED, "trainer.max_epochs=5", "optimizer.name=adam", "optimizer.lr=2e-3",
                   "optimizer.schedule=one_cycle", "dift.restart_warmup_epochs=1")
    pl.seed_everything(0, verbose=False)
    data = prepare_data(cfg)
    model = build_method(cfg)
    model.dift_data = dift_data(cfg, model.dift_cfg, data)
    dm = ContrastiveDataModule(data.ssl_train, cfg.data, cfg.augment, int(cfg.optimizer.batch_size), 0)
    steps = StepCounts()
    rec = Recorder()
    trainer = build_trainer(cfg, tmp_path, [rec, steps])
    trainer.fit(model, datamodule=dm)
    assert model.dift_state.phase == "filtered" and model.dift_state.decided_epoch == 2
    peak = 2e-3 * 64 / 256
    assert rec.lrs[0][0] == pytest.approx(peak / 25) and rec.lrs[2][-1] < 0.9 * peak
    assert rec.lrs[3][0] == pytest.approx(peak / 25)  # restarted from one-cycle's start, not from peak / 25 / 25
    assert max(rec.lrs[3]) == pytest.approx(peak) and rec.lrs[4][-1] < rec.lrs[3][-1]
    assert steps.at_start[2] == 2 * 8 and steps.at_start[3] == 0  # Adam's moments and step counts reset at the restart
    assert steps.at_start[4] == len(rec.sizes[3])


class StepCounts(pl.Callback):
    """Adam's step count (the largest over parameters) at the start of every epoch."""

    def __init__(self):
        self.at_start = {}

    def on_train_epoch_start(self, trainer, pl_module):
        state = trainer.optimizers[0].state
        self.at_start[trainer.current_epoch] = max((int(s["step"]) for s in state.values()), default=0)
