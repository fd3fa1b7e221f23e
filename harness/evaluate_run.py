"""Evaluate the encoder of a finished ``dift-pretrain`` run against any attack's trigger, without training.

    python -m harness.evaluate_run runs/clean attack=sslbackdoor attack.params.patch_size=12

Overrides change the saved config of the run before the data and trigger are rebuilt; training settings are
not used. Evaluating a clean run (``attack.rate=0`` or ``attack=none``) with a trigger gives the no-poison
control of that trigger. Prints the metrics as JSON and writes them to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

import attacks
from dift_plugin.errors import DiftUserError
from harness.experiment import evaluate_backbone, load_run, prepare_data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="attack=NAME and dotted key=value overrides")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        cfg, model = load_run(args.run_dir)
        for item in args.overrides:
            key, _, value = item.partition("=")
            if key == "attack":  # a whole attack group entry, as on the dift-pretrain command line
                cfg.attack = OmegaConf.load(Path(attacks.__file__).parents[1] / "conf" / "attack" / f"{value}.yaml")
            else:
                OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=False)
        attack = attacks.from_config(cfg.attack)
        if attack is not None:  # evaluate only: nothing is poisoned, the trigger goes on the test images
            cfg.attack.rate = 0
        metrics = evaluate_backbone(model.backbone, cfg, prepare_data(cfg, attack))
    except (DiftUserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    metrics["run"], metrics["attack"] = str(args.run_dir), OmegaConf.to_container(cfg.attack)
    text = json.dumps(metrics, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
