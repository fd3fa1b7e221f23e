"""Plot the ACC/ASR-vs-epoch curves (and the poisoned samples' density) of attacked runs into one PNG.

    python -m harness.plot_curves runs/a runs/b --out docs/attack_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [("asr_linear", "ASR linear %"), ("asr_knn", "ASR kNN %"), ("acc_linear", "ACC linear %"),
          ("projector_top_share", "poisoned share of the |P| densest\n(projector space)")]


def plot(run_dirs: list[Path], out: Path) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        curve = metrics.get("curve")
        if not curve:
            raise SystemExit(f"{run_dir}/metrics.json has no curve: it was not run with an attack")
        epochs = [row["epoch"] + 1 for row in curve]
        for ax, (key, _) in zip(axes, PANELS):
            if key in curve[0]:
                ax.plot(epochs, [row[key] for row in curve], marker=".", label=run_dir.name)
    for ax, (_, title) in zip(axes, PANELS):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("attack_curves.png"))
    args = parser.parse_args()
    plot(args.runs, args.out)


if __name__ == "__main__":
    main()
