import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from dift_plugin.errors import DiftUserError
from harness.callbacks import EpochStats
from harness.data import load_split
from harness.datamodule import ContrastiveDataModule
from harness.methods import METHODS, BaseMomentumMethod, build_method
from tests.conftest import make_cfg


def fit(cfg, **trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    train = load_split(cfg.data, "train", seed=0)
    model = build_method(cfg)
    dm = ContrastiveDataModule(train, cfg.data, cfg.augment, int(cfg.optimizer.batch_size), seed=0)
    stats = EpochStats()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[stats], **trainer_kwargs)
    return model, dm, trainer, stats


@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_decreases_over_a_few_epochs(method, data_root):
    # MoCo: a queue of two batches is full of real keys from epoch 1 on; before that its random initial keys
    # are easy negatives, so MoCo's loss is compared from epoch 1.
    extra = ["method.queue_size=128"] if method == "moco" else []
    first = 1 if method == "moco" else 0
    cfg = make_cfg(f"method={method}", "trainer.max_epochs=6", "optimizer.warmup_epochs=0", "data.max_train=256", *extra)
    model, dm, trainer, stats = fit(cfg, max_epochs=6)
    trainer.fit(model, datamodule=dm)
    losses = [e["loss"] for e in stats.history]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[first] - 0.03 * abs(losses[first]), losses


def test_forward_contract(data_root):
    for name in METHODS:
        model = build_method(make_cfg(f"method={name}"))
        out = model(torch.randn(4, 3, 32, 32))
        assert out["feats"].shape == (4, model.features_dim) and out["z"].shape == (4, 32)
        assert hasattr(model, "backbone") and hasattr(model, "projector")
    assert hasattr(build_method(make_cfg("method=byol")), "predictor")


def test_byol_predictor_is_an_mlp_by_default_and_one_linear_layer_on_request(data_root):
    default = build_method(make_cfg("method=byol")).predictor
    assert [type(m) for m in default] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    model = build_method(make_cfg("method=byol", "method.predictor=linear"))
    assert type(model.predictor) is nn.Linear and model.predictor.weight.shape == (32, 32)
    model.train()
    loss = model.ssl_loss([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    loss.backward()  # the linear predictor is trained with the online branch
    assert model.predictor.weight.grad.abs().sum() > 0
    with pytest.raises(DiftUserError, match="method.predictor must be 'mlp' or 'linear', got 'deep'"):
        build_method(make_cfg("method=byol", "method.predictor=deep"))


class TargetSnapshot(pl.Callback):
    """Keeps the momentum-branch weights as they were just before the first training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = [copy.deepcopy(t.state_dict()) for _, t in pl_module.momentum_pairs]


@pytest.mark.parametrize("method", ["byol", "moco"])
def test_target_branch_follows_the_momentum_rule(method, data_root):
    extra = ["method.queue_size=128"] if method == "moco" else []
    cfg = make_cfg(f"method={method}", "method.base_tau=0.9", *extra)
    model, dm, trainer, _ = fit(cfg, max_steps=1)
    snap = TargetSnapshot()
    trainer.callbacks.append(snap)
    assert isinstance(model, BaseMomentumMethod)
    trainer.fit(model, datamodule=dm)
    tau = model.tau(0)
    assert tau == pytest.approx(0.9)
    moved = 0
    for before, (online, target) in zip(snap.before, model.momentum_pairs):
        online_now = dict(online.named_parameters())
        for key, value in target.named_parameters():
            expected = tau * before[key] + (1 - tau) * online_now[key].detach()
            torch.testing.assert_close(value.detach(), expected, rtol=1e-5, atol=1e-6)
            moved += int(not torch.equal(value, before[key]))
    assert moved > 0


def test_tau_increases_to_final_by_cosine(data_root):
    model, dm, trainer, _ = fit(make_cfg("method=byol"), max_epochs=2)
    trainer.fit(model, datamodule=dm)  # 2 epochs x 8 steps
    taus = [model.tau(k / 16) for k in range(17)]
    assert taus[0] == pytest.approx(0.99) and taus[16] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert float(trainer.logged_metrics["tau"]) == pytest.approx(taus[15])  # the last step: (1 + 7/8) / 2


def test_moco_queue_advances_with_the_keys(data_root):
    cfg = make_cfg("method=moco", "method.queue_size=128")
    model, dm, trainer, _ = fit(cfg, max_steps=1)
    queue_before = model.queue.clone()
    trainer.fit(model, datamodule=dm)
    assert int(model.queue_ptr) == 64
    changed = (model.queue != queue_before).any(dim=1)  # (2 views, queue columns)
    assert changed[:, :64].all() and not changed[:, 64:].any()
    torch.testing.assert_close(model.queue[:, :, :64].norm(dim=1), torch.ones(2, 64))


def test_moco_rejects_a_queue_that_is_not_a_multiple_of_the_batch(data_root):
    model, dm, trainer, _ = fit(make_cfg("method=moco", "method.queue_size=100"), max_steps=1)
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        trainer.fit(model, datamodule=dm)


def test_unknown_method_is_a_clear_error():
    cfg = make_cfg()
    cfg.method.name = "swav"
    with pytest.raises(DiftUserError, match="unknown method 'swav'.*byol, moco, simclr"):
        build_method(cfg)
