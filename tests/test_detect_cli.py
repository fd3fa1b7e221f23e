import csv
import json

import numpy as np
import pytest

from harness.detect import main
from tests.test_detector import anchors_for, classes_with_cluster


def test_detect_on_saved_embeddings_writes_flagged_csv_and_summary(tmp_path, capsys):
    x, labels, poisoned = classes_with_cluster()
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "truth.npy", poisoned)
    aidx, alab = anchors_for(labels, poisoned)
    with (tmp_path / "anchors.csv").open("w") as f:
        f.write("index,label\n" + "".join(f"{i},{c}\n" for i, c in zip(aidx, alab)))
    main(["--embeddings", str(tmp_path / "emb.npy"), "--anchors", str(tmp_path / "anchors.csv"),
          "--truth", str(tmp_path / "truth.npy")])
    out = tmp_path / "emb_detect"
    rows = list(csv.DictReader((out / "flagged.csv").open()))
    assert set(rows[0]) == {"index", "sample", "density", "min_dist", "stage"}
    flagged = np.array([int(r["index"]) for r in rows])
    assert len(np.intersect1d(flagged, poisoned)) >= 0.95 * len(poisoned)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["after_spreading"]["precision"] >= 0.95 and summary["after_spreading"]["recall"] >= 0.95
    assert summary["detected_after_spreading"] == len(rows)
    assert "precision" in capsys.readouterr().out


def test_detect_reports_bad_input_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--embeddings", str(tmp_path / "missing.npy"), "--anchors", str(tmp_path / "a.csv")])
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
    (tmp_path / "a.csv").write_text("idx,lab\n1,2\n")
    np.save(tmp_path / "x.npy", np.zeros((50, 4), dtype=np.float32))
    with pytest.raises(SystemExit):
        main(["--embeddings", str(tmp_path / "x.npy"), "--anchors", str(tmp_path / "a.csv")])
    assert "columns index,label" in capsys.readouterr().err


def test_one_snapshot_is_audited_with_the_gated_rule_unless_asked(tmp_path):
    # no poison: the gated rule (dift-detect's default: one embedding, nothing to intersect with) flags under 1 %;
    # the paper's rule, asked for, keeps the far side of the clean dense candidates
    x, labels, _ = classes_with_cluster(poison_share=0.0)
    np.save(tmp_path / "emb.npy", x)
    aidx, alab = anchors_for(labels, np.zeros(0, dtype=np.int64))
    with (tmp_path / "anchors.csv").open("w") as f:
        f.write("index,label\n" + "".join(f"{i},{c}\n" for i, c in zip(aidx, alab)))
    flagged = {}
    for rule in ("default", "paper"):
        out = tmp_path / rule
        main(["--embeddings", str(tmp_path / "emb.npy"), "--anchors", str(tmp_path / "anchors.csv"),
              "--out", str(out)] + (["--anchor-rule", rule] if rule != "default" else []))
        summary = json.loads((out / "summary.json").read_text())
        flagged[summary["anchor_rule"]] = summary["detected_after_spreading"]
    assert set(flagged) == {"gated", "paper"}
    assert flagged["gated"] < 0.01 * len(x) < flagged["paper"]
