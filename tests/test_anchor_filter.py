"""The anchor filter (paper Eq. 6 + GMM): which candidates it keeps, both gates and the one-mode fallback."""

import numpy as np

from dift_plugin.anchors import filter_by_anchors


def draws(*groups):
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(mu, sd, n) for mu, sd, n in groups])


def test_a_broad_far_mode_does_not_claim_candidates_nearer_the_anchors_than_the_near_mode():
    # The README's figures: benign dense candidates near 1.07 +- 0.02, poisoned near 1.29 +- 0.10; five candidates
    # at 0.98-1.00 are nearer the anchors than any benign dense point. The broad far component wins that low tail
    # by likelihood, but they are not far from the anchors.
    d = np.concatenate([draws((1.07, 0.02, 300), (1.29, 0.10, 150)), np.linspace(0.98, 1.0, 5)])
    result = filter_by_anchors(d, population_min_dist=1.24, rule="gated")
    kept = set(result.kept.tolist())
    assert not kept & set(range(450, 455))
    assert kept <= set(np.flatnonzero(d > 1.1).tolist()) and len(kept & set(range(300, 450))) >= 140


def test_the_farthest_candidates_are_kept_when_the_near_mode_is_the_broad_one():
    d = np.concatenate([draws((1.0, 0.1, 300), (1.3, 0.01, 60)), [1.6, 1.7]])
    result = filter_by_anchors(d, population_min_dist=1.1, rule="gated")
    kept = set(result.kept.tolist())
    assert {360, 361} <= kept and set(range(300, 360)) <= kept
    assert d[result.kept].min() > 1.1  # of the near mode only its own far tail


def test_gates_and_the_one_mode_fallback():
    two_modes = draws((1.0, 0.02, 100), (1.2, 0.02, 50))
    assert len(filter_by_anchors(two_modes, population_min_dist=1.1, rule="gated").kept) == 50
    # even the far mode is nearer than typical
    none = filter_by_anchors(two_modes, population_min_dist=1.25, rule="gated")
    assert len(none.kept) == 0 and "no far mode" in none.reason
    flat = np.full(5, 1.2)  # no spread: one mode, kept whole or not at all by the population's median
    assert len(filter_by_anchors(flat, population_min_dist=1.0, rule="gated").kept) == 5
    assert len(filter_by_anchors(flat, population_min_dist=1.3, rule="gated").kept) == 0
    assert len(filter_by_anchors(np.array([2.0]), population_min_dist=1.0, rule="gated").kept) == 1
    assert len(filter_by_anchors(np.zeros(0), population_min_dist=1.0, rule="gated").kept) == 0


def test_the_paper_rule_keeps_the_far_side_where_our_gates_abstain():
    # SimCLR at temperature 1.0 (docs/dift_in_training.md): the poisoned candidates are the far mode, but nearer the
    # anchors than the population's median sample: the gated rule keeps nothing, the paper's the far mode
    below = draws((0.90, 0.02, 200), (1.00, 0.02, 300))
    assert len(filter_by_anchors(below, population_min_dist=1.08, rule="gated").kept) == 0
    paper = filter_by_anchors(below, population_min_dist=1.08, rule="paper")
    kept = set(paper.kept.tolist())
    assert len(kept & set(range(200, 500))) >= 290 and len(kept & set(range(200))) <= 2
    assert "paper rule" in paper.reason
    assert np.array_equal(filter_by_anchors(below, population_min_dist=1.08).kept, paper.kept)  # the default
    overlapping = draws((1.00, 0.03, 300), (1.03, 0.03, 200))  # one mode (D < 2) for the gated rule
    # all, beyond the median
    assert len(filter_by_anchors(overlapping, population_min_dist=0.9, rule="gated").kept) == 500
    far = filter_by_anchors(overlapping, population_min_dist=0.9, rule="paper").kept
    assert 0 < len(far) < 500 and overlapping[far].min() > np.quantile(overlapping, 0.4)  # its far side only
