"""Frozen-encoder evaluation: clean ACC by linear probe and weighted kNN, and backdoor ASR on triggered test images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from torch import nn
from tqdm.auto import tqdm

from harness.augment import Normalize


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, normalize: Normalize, batch_size: int = 512,
                     device: torch.device | str = "cpu", desc: str | None = None) -> torch.Tensor:
    """Embed un-augmented images (uint8 or float in [0, 1]) with ``encoder`` in eval mode; returns CPU float32.
    ``desc`` names a progress bar, drawn on a terminal only (not into a log file)."""
    was_training = encoder.training
    encoder.eval()
    normalize = normalize.to(device)
    out = []
    bar_off = True if desc is None else None  # None: tqdm draws only on a terminal
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=bar_off, leave=False):
        x = normalize(images[start:start + batch_size].to(device))
        out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out)


# eval.linear_features: what the linear probe reads (docs/attacks.md, "What the linear probe reads")
LINEAR_FEATURES = ("raw", "l2")


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, seed: int = 0, max_iter: int = 1000,
                 features: str = "raw") -> Pipeline:
    """Multinomial logistic regression on standardised frozen features: as they are (``raw``) or L2-normalised
    first (``l2``: the probe reads a feature's direction, as the cosine kNN does, not its norm)."""
    if features not in LINEAR_FEATURES:
        raise ValueError(f"features must be one of {', '.join(LINEAR_FEATURES)}, got {features!r}")
    steps = [Normalizer()] if features == "l2" else []
    clf = make_pipeline(*steps, StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    return clf.fit(train_x.numpy(), train_y.numpy())


@torch.no_grad()
def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, query: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN on cosine similarity (Wu et al. 2018; CTRL's monitor): votes exp(sim / T) of the k nearest."""
    train_x = F.normalize(train_x, dim=1)
    k = min(k, len(train_x))
    preds = []
    for start in range(0, len(query), chunk):
        sim = F.normalize(query[start:start + chunk], dim=1) @ train_x.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def attack_success_rate(pred: torch.Tensor, labels: torch.Tensor, target: int, include_target: bool = False) -> float:
    """Percent of triggered test images classified as ``target``; by default over non-target-class images only."""
    keep = torch.ones_like(labels, dtype=torch.bool) if include_target else labels != target
    return round(100.0 * (pred[keep] == target).double().mean().item(), 4)


def embed_splits(encoder: nn.Module, normalize: Normalize, splits: dict[str, torch.Tensor | None],
                 device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``extract_features`` of each named image set (None: left out), with a progress bar named after it."""
    return {name: extract_features(encoder, imgs, normalize, device=device, desc=f"embed {name}")
            for name, imgs in splits.items() if imgs is not None}


def evaluate_encoder(encoder: nn.Module, normalize: Normalize, train_images: torch.Tensor, train_labels: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                     triggered_test: torch.Tensor | None = None, target_class: int | None = None,
                     knn_k: int = 200, knn_temperature: float = 0.1, seed: int = 0,
                     device: torch.device | str = "cpu", linear_features: str = "raw") -> dict[str, float]:
    """ACC (linear, kNN) in percent on the clean test set; with ``triggered_test`` and ``target_class`` also
    ASR on non-target-class test images (``asr_*``) and CTRL's variant over all test images (``asr_*_all``).
    ``linear_features``: what the linear probe reads (``linear_probe``)."""
    if (triggered_test is None) != (target_class is None):
        raise ValueError("ASR needs both triggered_test and target_class")
    feats = embed_splits(encoder, normalize, {"train": train_images, "test": test_images, "triggered": triggered_test},
                         device)
    return score_features(feats, train_labels, test_labels, num_classes, target_class, knn_k, knn_temperature, seed,
                          linear_features)


def score_features(feats: dict[str, torch.Tensor], train_labels: torch.Tensor, test_labels: torch.Tensor,
                   num_classes: int, target_class: int | None = None, knn_k: int = 200, knn_temperature: float = 0.1,
                   seed: int = 0, linear_features: str = "raw") -> dict[str, float]:
    """``evaluate_encoder``'s metrics from embedded images: ``feats`` maps ``train``, ``test`` and (for ASR)
    ``triggered`` to their features."""
    probe = linear_probe(feats["train"], train_labels, seed=seed, features=linear_features)

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"linear": torch.as_tensor(probe.predict(x.numpy())),
                "knn": knn_predict(feats["train"], train_labels, x, num_classes, knn_k, knn_temperature)}

    metrics = {f"acc_{kind}": round(100.0 * (p == test_labels).double().mean().item(), 4)
               for kind, p in predict(feats["test"]).items()}
    if "triggered" in feats:
        for kind, p in predict(feats["triggered"]).items():
            metrics[f"asr_{kind}"] = attack_success_rate(p, test_labels, target_class)
            metrics[f"asr_{kind}_all"] = attack_success_rate(p, test_labels, target_class, include_target=True)
    return metrics
