"""DIFT's training-time parts on their own: config, Eq. 7, branch sync, sampler, LR restart."""

import dataclasses
import inspect

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler

from dift_plugin.branches import sync_momentum_branches
from dift_plugin.config import DetectorConfig, DIFTConfig, DIFTConfigError, FinetuneConfig, parse_dift_config
from dift_plugin.detector import DIFTDetector
from dift_plugin.embedding import DIFTData
from dift_plugin.finetune import density_reduction_loss, finetune, mean_pairwise_distance
from dift_plugin.sampling import ExcludingSampler
from dift_plugin.schedule import restarted_schedule, warmup_cosine
from dift_plugin.scores import density_rank_stats, detection_scores
from harness.config import CONF_DIR
from harness.methods import build_method
from tests.conftest import make_cfg


def test_dift_true_false_and_mapping():
    assert parse_dift_config(False) is None and parse_dift_config(None) is None
    assert parse_dift_config(True) == DIFTConfig()
    cfg = parse_dift_config({"space": "backbone", "finetune": {"lr": 1, "lam": 0.5}, "detector": {"k": 5}})
    assert cfg.space == "backbone" and cfg.finetune.lr == 1.0 and cfg.finetune.lam == 0.5 and cfg.detector.k == 5
    assert cfg.finetune.epochs == FinetuneConfig().epochs
    assert parse_dift_config({"enabled": False}) is None


def test_detector_defaults_live_in_one_place_and_every_key_reaches_the_detector(data_root):
    signature = inspect.signature(DIFTDetector.__init__).parameters
    for f in dataclasses.fields(DetectorConfig):
        assert signature[f.name].default == getattr(DetectorConfig(), f.name), f.name
    model = build_method(make_cfg("defense=dift", "dift.detector.spread_max_iter=7", "dift.detector.graph_k=9"))
    assert model.dift_detector.spread_max_iter == 7 and model.dift_detector.graph_k == 9


def test_the_defense_config_file_holds_exactly_the_documented_defaults():
    block = yaml.safe_load((CONF_DIR / "defense" / "dift.yaml").read_text())["dift"]
    assert parse_dift_config(block) == DIFTConfig()


@pytest.mark.parametrize("block, message", [
    ({"finetune": {"lr": "fast"}}, "dift.finetune.lr must be float, got str 'fast'"),
    ({"detector": {"kk": 3}}, "unknown key(s) dift.detector.kk; allowed: alpha, anchor_rule, backend"),
    ({"spce": "projector"}, "unknown key(s) dift.spce"),
    ({"space": "pixels"}, "dift.space must be one of projector, backbone"),
    ({"detector": {"anchor_rule": "bare"}}, "dift.detector.anchor_rule must be one of gated, paper"),
    ({"start_epoch": 1.5}, "dift.start_epoch must be int"),
    ({"stop_epoch": 2, "start_epoch": 3}, "dift.stop_epoch must be >= start_epoch"),
    ({"detector": {"candidate_fraction": 1.5}}, "dift.detector.candidate_fraction must be in (0, 1)"),
    ({"detector": {"min_cohesion": 1.2}}, "dift.detector.min_cohesion must be in [0, 1]"),
    ({"finetune": 3}, "dift.finetune must be a mapping"),
    ("yes", "dift must be true, false or a mapping"),
])
def test_a_bad_dift_block_is_rejected_with_the_key_and_what_is_allowed(block, message):
    with pytest.raises(DIFTConfigError) as e:
        parse_dift_config(block)
    assert message in str(e.value)


def test_detect_every_skips_epochs_but_never_the_last_chance():
    cfg = parse_dift_config({"start_epoch": 1, "detect_every": 3, "stop_epoch": 8})
    assert [e for e in range(12) if cfg.detects_after(e, 12)] == [1, 4, 7, 8, 9, 10, 11]
    assert [e for e in range(12) if parse_dift_config(True).detects_after(e, 12)] == list(range(12))
    with pytest.raises(DIFTConfigError, match="dift.detect_every must be a positive integer"):
        parse_dift_config({"detect_every": 0})


def test_a_bad_dift_block_fails_when_the_method_is_built():
    with pytest.raises(DIFTConfigError, match="dift.finetune.lam must be >= 0"):
        build_method(make_cfg("defense=dift", "dift.finetune.lam=-1"))


def test_eq7_matches_its_formula_and_one_step_spreads_the_embeddings():
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    pairs = [torch.sqrt(((x[i] - x[j]) ** 2).sum() + 1e-3) for i in range(6) for j in range(6) if i != j]
    expected = -torch.stack(pairs).mean() + 0.2 * (x ** 2).sum(1).mean()
    assert density_reduction_loss(x, 0.2, 1e-3).item() == pytest.approx(expected.item(), rel=1e-5)

    encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.randn(1, 3, 8, 8).repeat(32, 1, 1, 1) + 0.05 * torch.randn(32, 3, 8, 8)  # a dense group
    bn_before = encoder[1].running_mean.clone()
    result = finetune(encoder, [encoder], lambda: [images], FinetuneConfig(epochs=1, lr=0.05, lam=0.01))
    assert result.steps == 1
    assert result.distance_after > result.distance_before
    assert encoder.training and all(p.grad is None for p in encoder.parameters())  # as it was; no stale grads
    with torch.no_grad():
        assert mean_pairwise_distance(encoder.eval()(images)) == pytest.approx(result.distance_after, rel=1e-4)
    assert torch.equal(encoder[1].running_mean, bn_before)  # eval mode: no statistics from the poisoned batch


def test_diverging_finetuning_gives_back_the_weights_it_started_from(caplog: pytest.LogCaptureFixture):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.randn(1, 3, 8, 8).repeat(16, 1, 1, 1) + 0.05 * torch.randn(16, 3, 8, 8)
    start = {k: v.clone() for k, v in encoder.state_dict().items()}
    with caplog.at_level("WARNING"):
        result = finetune(encoder, [encoder], lambda: [images], FinetuneConfig(epochs=50, lr=1e3, lam=0.5))
    assert result.diverged and 1 < result.steps < 50 and "diverged" in caplog.text  # finite steps, then NaN
    assert all(torch.equal(v, start[k]) for k, v in encoder.state_dict().items())
    assert result.distance_after == pytest.approx(result.distance_before, rel=1e-5)
    assert all(p.requires_grad and p.grad is None for p in encoder.parameters())


def test_eq7_spreads_near_duplicates_that_a_float32_gram_matrix_would_collapse():
    torch.manual_seed(0)
    x = (torch.randn(1, 64) * 10).repeat(5, 1) + 1e-4 * torch.randn(5, 64)  # poisoned samples: nearly one point
    x.requires_grad_(True)
    density_reduction_loss(x, 0.0, 1e-12).backward()
    x64 = x.detach().double()
    pairs = [(x64[i] - x64[j]).norm() for i in range(5) for j in range(5) if i != j]
    assert min(pairs) > 1e-4  # apart in exact arithmetic ...
    assert density_reduction_loss(x.detach(), 0.0, 1e-12).item() == pytest.approx(-torch.stack(pairs).mean().item(),
                                                                                      rel=1e-3)
    assert (x.grad.norm(dim=1) > 0.1).all()  # ... and pushed apart, each with a unit-scale gradient


def test_fine_tuning_draws_new_batches_every_epoch():
    data = DIFTData(torch.arange(20), np.array([0, 1]), np.array([0, 1]))
    order = torch.Generator().manual_seed(0)  # one generator for the whole fine-tuning, as the mixin passes it
    seen = [[b.tolist() for b in data.batches(np.arange(20), 4, torch.device("cpu"), order)] for _ in range(2)]
    assert sorted(sum(seen[0], [])) == list(range(20)) and seen[0] != seen[1]


def test_byol_sync_copies_backbone_and_projector_and_leaves_the_predictor():
    model = build_method(make_cfg("method=byol"))
    with torch.no_grad():
        for p in [*model.backbone.parameters(), *model.projector.parameters(), *model.predictor.parameters()]:
            p.add_(torch.randn_like(p))
    predictor = {k: v.clone() for k, v in model.predictor.state_dict().items()}
    assert not torch.equal(next(model.backbone.parameters()), next(model.momentum_backbone.parameters()))
    sync_momentum_branches(model)
    for online, target in ((model.backbone, model.momentum_backbone), (model.projector, model.momentum_projector)):
        for (k, a), b in zip(online.state_dict().items(), target.state_dict().values()):
            assert torch.equal(a, b), k
    assert all(torch.equal(v, model.predictor.state_dict()[k]) for k, v in predictor.items())
    assert all(not p.requires_grad for p in model.momentum_backbone.parameters())


def test_moco_sync_resets_the_queue():
    model = build_method(make_cfg("method=moco", "method.queue_size=128"))
    model.queue_ptr.fill_(64)
    before = model.queue.clone()
    assert "queue reset" in sync_momentum_branches(model)
    assert int(model.queue_ptr) == 0 and not torch.allclose(model.queue, before)
    assert torch.allclose(model.queue.norm(dim=1), torch.ones(2, 128))


def test_excluding_sampler_keeps_ranks_equal_and_never_yields_excluded():
    excluded = np.array([0, 3, 5, 7, 11, 12, 13])
    shards = []
    for rank in range(2):
        inner = DistributedSampler(range(50), num_replicas=2, rank=rank, shuffle=True, seed=1, drop_last=True)
        sampler = ExcludingSampler(inner, excluded, 50)
        sampler.set_epoch(3)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == (50 - 7) // 2
    assert not set(shards[0]) & set(shards[1]) and not (set(shards[0]) | set(shards[1])) & set(excluded.tolist())
    plain = ExcludingSampler(RandomSampler(range(50)), excluded, 50)
    seen = list(plain)
    assert len(seen) == len(plain) == 43 and sorted(seen) == sorted(set(range(50)) - set(excluded.tolist()))


def test_the_restarted_schedule_starts_at_the_initial_lr_and_resumes_in_place():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    first = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(2, 20))
    for _ in range(15):
        opt.step()
        first.step()
    assert opt.param_groups[0]["lr"] < 0.2
    schedule = restarted_schedule(opt, 0, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4)
    for _ in range(4):
        opt.step()
        schedule.step()
    continued = opt.param_groups[0]["lr"]
    assert continued == pytest.approx(0.4 * warmup_cosine(0, 10)(4)) and continued < 0.4
    resumed = restarted_schedule(opt, 0, 10, steps_done=4)  # what a resumed run installs
    assert resumed.last_epoch == 4 and opt.param_groups[0]["lr"] == pytest.approx(continued)


def test_scores_rank_and_count_the_poisoned_samples():
    density = np.arange(100, dtype=float)  # sample 99 densest
    truth = np.array([99, 98, 97, 10])
    stats = density_rank_stats(density, truth)
    assert stats["top_share"] == 0.75  # 3 of the 4 densest are poisoned
    assert stats["median_rank_pct"] == 1.5  # ranks 0, 1, 2 and 89: median 1.5 of N = 100
    scores = detection_scores(np.array([99, 98, 5]), truth, 100)
    assert scores == {"precision": round(2 / 3, 4), "recall": 0.5, "fpr": round(1 / 96, 6)}
