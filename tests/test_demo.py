"""`make demo` in its quick form, end to end with the real Whisper tiny.en: the main effect's direction holds."""
import json

import pytest

import run_demo


@pytest.mark.slow
def test_quick_demo_tuning_raises_language_alignment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # models/, data/ and runs/ of this test stay in its temp folder
    assert run_demo.main(["--quick", "--out", "runs/demo-quick", "--data", "data", "--no-progress"]) == 0
    out = tmp_path / "runs" / "demo-quick"
    result = json.loads((out / "findings.json").read_text())
    assert result["models"] == ["pretrained", "tuned"]
    # the main effect: brain-tuning raises language-ROI alignment on the held-out story
    assert result["alignment"]["tuned"]["language"] > result["alignment"]["pretrained"]["language"]
    assert "language" in result["low_level_impact_pct"]["tuned"]  # measured (its direction held in 2 of 3 seeds)
    report = (out / "REPORT.md").read_text()
    assert "## Headline" in report and "![alignment](eval/comparison/alignment_by_layer.png)" in report
    for png in ("eval/comparison/alignment_by_layer.png", "train/tuned/loss_curve.png", "probes_summary.png"):
        assert (out / png).is_file(), png
    cfg = json.loads((out / "train" / "tuned" / "config.json").read_text())
    assert cfg["args"]["freeze_layers"] == 1 and cfg["args"]["init_head"] == "ridge"
    # the frozen bottom block ran once per window (front-end cache), and its derived data was removed after training
    assert cfg["args"]["resolved"]["front_end_cache"]["blocks_included"] == 1
    assert not (out / "train" / "front_end_cache").exists()
