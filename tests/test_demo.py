"""`make demo` in its quick form, end to end with the real Whisper tiny.en: the main effect's direction holds."""
import json
import shutil
from pathlib import Path

import pytest

import atomic_io
import run_demo
import run_utils


@pytest.mark.slow
def test_quick_demo_tuning_raises_language_alignment(tmp_path, monkeypatch):
    import os
    monkeypatch.chdir(tmp_path)  # models/, data/ and runs/ of this test stay in its temp folder
    out = tmp_path / "runs" / "demo-quick"
    stale = out / "cache" / "audio16k" / "souls-0123456789abcdef.npy"  # left by a killed earlier demo
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    (out / run_demo.RUN_RECORD).write_text("{}")
    user_cache = tmp_path / "home_cache"  # standing in for ~/.cache/brain-tuning
    (user_cache / "audio16k").mkdir(parents=True)
    monkeypatch.setenv("BRAIN_TUNING_CACHE", str(user_cache))
    before = sorted(user_cache.rglob("*"))
    assert run_demo.main(["--quick", "--out", "runs/demo-quick", "--data", "data", "--no-progress"]) == 0
    # the demo's caches are its own (out/cache, emptied first); the user's cache and setting are untouched
    assert not stale.exists() and any((out / "cache" / "audio16k").glob("*.npy"))
    assert os.environ["BRAIN_TUNING_CACHE"] == str(user_cache) and sorted(user_cache.rglob("*")) == before
    result = json.loads((out / "findings.json").read_text())
    assert result["models"] == ["pretrained", "tuned"]
    assert result["probes_f1_macro_uniform_guess"] == {"semantic_category": 1 / 8}  # the miniature's 8 categories
    # the main effect: brain-tuning raises language-ROI alignment on the held-out story
    assert result["alignment"]["tuned"]["language"] > result["alignment"]["pretrained"]["language"]
    assert "language" in result["low_level_impact_pct"]["tuned"]  # measured (direction varies by seed, recipe: README)
    # the gain's interval from resampling the test story's TRs, beside the verdict
    assert result["checks"][0]["interval"].startswith("95% interval ")
    # tuning started from the ridge head and its best epoch improved on that start (the report's table says so)
    assert result["training"]["tuned"]["best_beats_initial"] is True and "pretrained" not in result["training"]
    report = (out / "REPORT.md").read_text()
    assert f"| tuned | {result['training']['tuned']['initial_val_loss']:.4f} | " in report
    from demo_report import holds_count
    assert f"## Headline ({holds_count(result['checks'])})" in report  # the count over every check of the run
    assert "![alignment](eval/comparison/alignment_by_layer.png)" in report
    commit = run_utils.toolkit_version()["commit"]  # the code that made it, in the header
    assert f" · toolkit {commit[:10] if commit else 'unknown'}" in report.splitlines()[2]
    assert "- device: cpu, precision fp32 (" in report  # where the steps ran: a GPU's bf16 numbers differ
    from demo_report import cpu_line
    assert f"- CPU: {cpu_line(run_utils.cpu_identity())} (" in report and result["settings"]["cpu"]["capability"]
    import re
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)  # every plot the report shows is there
    assert {"eval/comparison/alignment_by_layer.png", "eval/comparison/voxel_scatter.png", "train/tuned/loss_curve.png",
            "probes_summary.png"} <= set(linked)
    for png in linked:
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    cfg = json.loads((out / "train" / "tuned" / "config.json").read_text())
    flags = run_demo.DEMO_TRAIN_FLAGS
    frozen = int(flags[flags.index("--freeze-layers") + 1])
    assert frozen >= 1 and cfg["args"]["freeze_layers"] == frozen and cfg["args"]["init_head"] == "ridge"
    # the frozen bottom blocks ran once per window (front-end cache), and its derived data was removed after training
    assert cfg["args"]["resolved"]["front_end_cache"]["blocks_included"] == frozen
    assert not (out / "train" / "front_end_cache").exists()


def _write_diagnostic(out, name, f1_by_model, baseline=0.16, context_words=2.3):
    for m, f1 in f1_by_model.items():
        (out / "diagnostics" / name / m).mkdir(parents=True)
        (out / "diagnostics" / name / m / "results.json").write_text(json.dumps({
            "layers": [1, 2], "n_layers": 2, "context_s": 3.0, "max_per_word": 5, "n_occurrences": 480, "n_folds": 6,
            "chance": {"f1_macro_uniform_guess": 0.125},
            "context_label_baseline": {"test": {"f1_macro": baseline}, "sem": {"f1_macro": 0.02},
                                       "mean_context_words": context_words},
            "per_layer": {str(l): {"test": {"f1_macro": v}, "sem": {"f1_macro": 0.01}} for l, v in zip((1, 2), f1)}}))


def test_report_diagnostic_sections_list_each_models_layers_and_the_baseline(tmp_path):
    from demo_report import diagnostic_scores, diagnostic_section
    models = ["pretrained", "tuned"]
    assert diagnostic_section(tmp_path, models) == [] and diagnostic_scores(tmp_path, models) == {}  # --quick
    _write_diagnostic(tmp_path, "story_word_category", {"pretrained": (0.07, 0.05)})  # one model's only (killed)
    assert diagnostic_section(tmp_path, models) == [] and diagnostic_scores(tmp_path, models) == {}
    shutil.rmtree(tmp_path / "diagnostics")
    _write_diagnostic(tmp_path, "story_word_category", {"pretrained": (0.07, 0.05), "tuned": (0.08, 0.15)})
    lines = diagnostic_section(tmp_path, models)
    assert "| 2 | 0.050 ± 0.010 | 0.150 ± 0.010 |" in lines and "| 1 | 0.070 ± 0.010 | 0.080 ± 0.010 |" in lines
    assert any("not findings" in l for l in lines) and "### Category of story words in context" in lines
    assert "| context-label baseline | 0.160 ± 0.020 (2.3 words in context on average) | |" in lines
    assert not any("neutral sentences" in l for l in lines)  # the second diagnostic was not run
    _write_diagnostic(tmp_path, "carrier_word_category", {"pretrained": (0.07, 0.06), "tuned": (0.07, 0.19)}, 0.03, 0)
    lines = diagnostic_section(tmp_path, models)
    assert "### Category of words in neutral sentences" in lines and "| 2 | 0.060 ± 0.010 | 0.190 ± 0.010 |" in lines
    assert sum(l.startswith("## ") for l in lines) == 1  # one introduction for both
    scores = diagnostic_scores(tmp_path, models)
    assert scores["carrier_word_category"] == {"f1_macro": {"pretrained": {"1": 0.07, "2": 0.06},
                                                            "tuned": {"1": 0.07, "2": 0.19}},
                                               "context_label_baseline": 0.03}


def test_training_table_reads_each_tuning_run_and_flags_a_best_epoch_no_better_than_the_start(tmp_path):
    from demo_report import training_summary, training_table
    runs = {"tuned": {"initial_val_loss": 0.9922, "best_epoch": 1, "best_val_loss": 0.8965, "best_beats_initial": True},
            "control": {"initial_val_loss": 0.9922, "best_epoch": 1, "best_val_loss": 0.9987,
                        "best_beats_initial": False}}
    for m, fields in runs.items():
        (tmp_path / "train" / m).mkdir(parents=True)
        (tmp_path / "train" / m / "config.json").write_text(json.dumps(dict(fields, args={"seed": 0})))
    (tmp_path / "train" / "old").mkdir()  # a run from before these fields were recorded
    (tmp_path / "train" / "old" / "config.json").write_text(json.dumps({"best_epoch": 2, "best_val_loss": 0.5}))
    summary = training_summary(tmp_path, ["pretrained", "tuned", "control", "old"])
    assert list(summary) == ["tuned", "control", "old"] and summary["tuned"] == runs["tuned"]  # no run: no row
    table = training_table(summary)
    assert "| tuned | 0.9922 | 1 | 0.8965 | yes |" in table
    assert "| control | 0.9922 | 1 | 0.9987 | **no** |" in table
    assert "| old | – | 2 | 0.5000 | unknown |" in table


def test_headline_rows_and_the_count_of_findings_that_hold():
    from demo_report import _loss_cell, headline, holds_count
    result = {"models": ["pretrained", "tuned"],
              "alignment": {"pretrained": {"language": 0.1, "auditory": 0.4}, "tuned": {"language": 0.13, "auditory": 0.42}},
              "change_pct": {"pretrained": {"language": 0.0, "auditory": 0.0}, "tuned": {"language": 30.0, "auditory": 5.0}},
              "low_level_impact_pct": {"pretrained": {"language": 37.33, "auditory": 47.0},
                                       "tuned": {"language": 35.79, "auditory": 45.0}},
              "probes_f1_macro": {"semantic_category": {"pretrained": 0.036, "tuned": 0.0284}},
              "semantic_preference": {"pretrained": -0.05904, "tuned": -0.09436},
              "checks": [{"finding": "f", "expected": "e", "measured": -1.5, "holds": True, "note": "caveat",
                          "interval": "95% interval -3.0 to +1.0"}]}
    table = headline(result)
    assert "| pretrained | 0.100 (+0.0) | 0.400 (+0.0) | 37.3 | 0.036 | -0.0590 |" in table  # the language ROI's impact
    assert "| tuned | 0.130 (+30.0) | 0.420 (+5.0) | 35.8 | 0.028 | -0.0944 |" in table
    assert "| f | e | -1.500 | yes | caveat; 95% interval -3.0 to +1.0 |" in table  # the caveat and the interval
    checks = [{"holds": True, "note": "below chance"}, {"holds": False, "note": "below chance"}, {"holds": True},
              {"holds": False, "note": ""}]
    assert holds_count(checks) == "2 of 4 findings hold, 1 of them with a caveat (see note)"  # failed ones: no caveat
    assert holds_count(checks[2:]) == "1 of 2 findings hold"
    # a run that did not record whether its best epoch beat the start: no mark, not a failure
    assert _loss_cell({"initial_val_loss": 0.9, "best_val_loss": 0.95}) == "0.9000 → 0.9500"
    assert _loss_cell({"initial_val_loss": 0.9, "best_val_loss": 0.95, "best_beats_initial": False}).endswith(" ✗")
    assert _loss_cell({"best_val_loss": 0.95}) == "–" and _loss_cell(None) == "–"


def test_seed_summary_tables_checks_and_the_diagnostics(tmp_path):
    from demo_report import write_seed_summary
    check = {"finding": "language gain", "expected": ">= +20%", "measured": 23.0, "holds": True}
    results = {s: {"checks": [dict(check, measured=m, holds=m >= 20)], "models": ["pretrained", "tuned"],
                   "alignment": {"pretrained": {"language": 0.2}, "tuned": {"language": 0.2 * (1 + m / 100)}},
                   "change_pct": {"pretrained": {"language": 0.0}, "tuned": {"language": m}},
                   "diagnostics": {"story_word_category": {
                       "f1_macro": {"pretrained": {"1": 0.1, "4": 0.07}, "tuned": {"1": 0.1, "4": f1}},
                       "context_label_baseline": base}}}
               for s, m, f1, base in ((0, 23.0, 0.14, 0.155), (1, 12.0, 0.16, 0.175))}
    results[1]["checks"][0]["interval"] = "95% interval +1.0 to +25.0%"
    text = write_seed_summary(tmp_path, results)
    assert "| language gain | +23.000 ✓ | +12.000 ✗ | 1 of 2 |" in text
    # the language-ROI alignment per model and seed, as a table and as bars
    assert "| pretrained | 0.200 (+0.0) | 0.200 (+0.0) |" in text and "| tuned | 0.246 (+23.0) | 0.224 (+12.0) |" in text
    assert (tmp_path / "seeds_language.png").read_bytes()[:4] == b"\x89PNG"
    assert "language gain: seed 1: 95% interval +1.0 to +25.0%." in text  # seed 0 has none (an older run)
    assert "category of story words in context, F1 macro on unseen words at layer 4" in text
    assert "| tuned | 0.140 | 0.160 |" in text and "| pretrained | 0.070 | 0.070 |" in text
    assert "| context-label baseline | 0.155 | 0.175 |" in text and "neutral sentences" not in text
    assert "Validation loss, epoch 0" not in text  # seeds without the training record: no table
    results[0]["training"] = {"tuned": {"initial_val_loss": 0.9922, "best_epoch": 1, "best_val_loss": 0.8965,
                                        "best_beats_initial": True}}
    assert "Validation loss, epoch 0" not in write_seed_summary(tmp_path, results)  # nor when one seed lacks it
    for s, best in ((0, 0.8965), (1, 0.9987)):
        results[s]["training"] = {"tuned": {"initial_val_loss": 0.9922, "best_epoch": 1, "best_val_loss": best,
                                            "best_beats_initial": best < 0.9922}}
    text = write_seed_summary(tmp_path, results)
    assert "| tuned | 0.9922 → 0.8965 | 0.9922 → 0.9987 ✗ |" in text
    assert json.loads((tmp_path / "seeds.json").read_text())["1"]["checks"][0]["holds"] is False


def test_below_chance_probe_gain_is_flagged_in_headline_and_seed_summary(tmp_path):
    from demo_report import below_chance_note, headline, write_seed_summary
    assert below_chance_note({"pretrained": 0.0, "tuned": 0.049}, 0.125).startswith("every model below chance (0.125)")
    assert below_chance_note({"pretrained": 0.0, "tuned": 0.13}, 0.125) == ""  # one model above chance: no caveat
    note = below_chance_note({"pretrained": 0.0, "tuned": 0.049}, 0.125)
    roi = {"language": 0.3, "auditory": 0.5}
    result = {"models": ["pretrained"], "alignment": {"pretrained": roi}, "change_pct": {"pretrained": roi},
              "low_level_impact_pct": {}, "probes_f1_macro": {"semantic_category": {"pretrained": 0.0}},
              "semantic_preference": {"pretrained": -0.05},
              "checks": [{"finding": "semantic-category probe improves", "expected": "tuned > pretrained",
                          "measured": 0.049, "holds": True, "note": note}]}
    assert f"| semantic-category probe improves | tuned > pretrained | +0.049 | yes | {note} |" in headline(result)
    text = write_seed_summary(tmp_path, {0: result, 1: dict(result, checks=[dict(result["checks"][0], note="")])})
    assert "| semantic-category probe improves | +0.049 ✓ † | +0.049 ✓ | 2 of 2 |" in text and f"† {note}" in text


def test_pipeline_steps_diagnostics_only_on_request_and_quick_drops_the_control(tmp_path, monkeypatch):
    import demo_report
    ran, argv = [], {}
    monkeypatch.setattr(run_demo, "_step", lambda name, fn, *args: (ran.append(name), argv.update({name: args})))
    monkeypatch.setattr(demo_report, "findings", lambda out, models: {"models": models})
    monkeypatch.setattr(demo_report, "write_report", lambda *a, **k: None)

    def steps(**kw):
        ran.clear()
        run_demo.run_pipeline(tmp_path / "out", tmp_path / "data", seed=0, progress=False, **kw)
        return list(ran)

    default = steps(quick=False)
    assert "brain-tune (control)" in default and "alignment of the pretrained, tuned, control models" in default
    assert not any(s.startswith("diagnostic") for s in default)  # `make demo` leaves them out (~2.5 min)
    full = steps(quick=False, diagnostics=True)
    extra = [s for s in full if s not in default]
    expected = []
    for what in ("story words in context", "words in neutral sentences"):
        expected += [f"diagnostic: category of {what} (pretrained, tuned, control)", f"compare the diagnostic ({what})"]
    assert extra == expected and full[:len(default)] == default  # appended after everything else
    # every probe is one run of the three models (shared bottom), one result folder per model
    for step in [s for s in default if s.startswith(("probe ", "semantic preference"))]:
        (args,) = argv[step]
        names = args[args.index("--model-name") + 1:args.index("--out")]
        outs = args[args.index("--out") + 1:][:3]
        assert len(names) == 3 and names[0].endswith("whisper-tiny.en") and "control" in names[2], step
        assert [Path(o).name for o in outs] == ["pretrained", "tuned", "control"], step
    # --teacher: targets from the miniature's english1000, a third tuning on them, a fourth model everywhere
    taught = steps(quick=False, teacher=True)
    new = ["teacher targets (the miniature's english1000 word embedding)", "brain-tune (teacher)"]
    assert [s for s in taught if s in new] == new  # the rest: the default steps, each over four models
    assert [s.replace(", teacher", "") for s in taught if s not in new] == default
    (targets_args,) = argv["teacher targets (the miniature's english1000 word embedding)"]
    (teacher_args,) = argv["brain-tune (teacher)"]
    assert teacher_args[teacher_args.index("--targets-from") + 1] == targets_args[targets_args.index("--out") + 1]
    assert taught.index("brain-tune (teacher)") < taught.index("alignment of the pretrained, tuned, control, teacher "
                                                                 "models")
    for step in [s for s in taught if s.startswith(("probe ", "semantic preference"))]:
        (args,) = argv[step]
        assert [Path(o).name for o in args[args.index("--out") + 1:][:4]] == ["pretrained", "tuned", "control",
                                                                                "teacher"], step
    quick = steps(quick=True, diagnostics=True)
    assert not any("control" in s or s.startswith("diagnostic") for s in quick)
    assert "probe semantic_category (pretrained, tuned)" in quick and not any("phonemes" in s for s in quick)


def test_every_seeded_step_gets_the_seed_the_data_its_size_and_the_model_is_converted_once(tmp_path, monkeypatch):
    import demo_report
    import whisper_ct2
    from data_utils import TEST_STORY
    argv = {}
    monkeypatch.setattr(run_demo, "_step", lambda name, fn, *args: argv.update({name: args}))
    monkeypatch.setattr(demo_report, "findings", lambda out, models: {"models": models})
    monkeypatch.setattr(demo_report, "write_report", lambda *a, **k: None)
    converted = []
    monkeypatch.setattr(whisper_ct2, "is_converted", lambda folder: bool(converted))
    front_cache = tmp_path / "out" / "train" / "front_end_cache"
    front_cache.mkdir(parents=True)  # as the tuning runs leave it: ~0.4 GB of derived data
    run_demo.run_pipeline(tmp_path / "out", tmp_path / "data", seed=7, quick=False, progress=False, size="large")
    assert not front_cache.exists()
    fmri, downstream = argv["build the miniature fMRI and downstream datasets (side by side)"]
    assert fmri[1:] == (tmp_path / "data" / "miniature", dict(seed=7, size="large", quiet=True))
    assert downstream[1:] == (tmp_path / "data" / "downstream", dict(seed=7, size="demo", quiet=True))
    seeded = [name for name in argv if name.startswith(("brain-tune", "alignment", "probe "))]
    assert len(seeded) == 2 + 1 + len(run_demo.PROBE_TASKS)
    for name in seeded:
        (args,) = argv[name]
        assert args[args.index("--seed") + 1] == "7", name
    (args,) = argv["semantic preference (pretrained, tuned, control)"]
    assert args[args.index("--stories") + 1] == TEST_STORY  # the held-out story's words
    assert "convert the bundled Whisper tiny.en to a HF model" in argv
    argv.clear()
    converted.append(True)
    run_demo.run_pipeline(tmp_path / "out", tmp_path / "data", seed=7, quick=True, progress=False)
    assert "convert the bundled Whisper tiny.en to a HF model" not in argv and argv  # converted once, kept


def test_a_failing_step_stops_the_demo_and_a_failed_build_is_raised_in_it(tmp_path):
    import os
    import shutil
    run_demo._step("fine", lambda: 0)
    run_demo._step("a build (returns nothing)", lambda: None)
    with pytest.raises(SystemExit, match=r"^demo step 'probe intent' failed with exit code 3$"):
        run_demo._step("probe intent", lambda: 3)
    # the two builds run in spawned processes: a failure there must reach the demo, not vanish with the process
    with pytest.raises(FileNotFoundError):
        run_demo._build_side_by_side((os.makedirs, tmp_path / "made", {}), (shutil.rmtree, tmp_path / "missing", {}))
    assert (tmp_path / "made").is_dir()


def test_a_run_caches_in_its_own_emptied_folder_and_gives_the_cache_setting_back(tmp_path, monkeypatch):
    import os
    from file_readers import CACHE_ENV
    out, seen = tmp_path / "out", []

    def steps(run_out, *args):  # stands in for the steps: what they would find
        seen.append((os.environ[CACHE_ENV], (run_out / "cache" / "audio16k" / "old.npy").exists()))
        if len(seen) == 3:
            raise RuntimeError("a step failed")
        return {}
    monkeypatch.setattr(run_demo, "_run_steps", steps)
    for before in (None, "/home/user/.cache/brain-tuning", "/home/user/.cache/brain-tuning"):
        (out / "cache" / "audio16k").mkdir(parents=True, exist_ok=True)
        (out / "cache" / "audio16k" / "old.npy").write_bytes(b"")  # left by a killed earlier demo
        if before is None:
            monkeypatch.delenv(CACHE_ENV, raising=False)
        else:
            monkeypatch.setenv(CACHE_ENV, before)
        try:
            run_demo.run_pipeline(out, tmp_path / "data", 0, quick=True, progress=False)
        except RuntimeError:
            assert len(seen) == 3  # the setting is given back after a failure too
        assert seen[-1] == (str((out / "cache").resolve()), False)
        assert os.environ.get(CACHE_ENV) == before


def test_interval_notes_read_the_bootstrap_in_either_pair_order():
    from demo_report import difference_interval_note, gain_interval_note
    boot = {"change_vs_first_pct_ci95": {"tuned": {"language": [2.5, 21.0]}},
            "difference_ci95": {"control - tuned": {"language": [-0.03, 0.01]}},
            "share_of_samples_above": {"control - tuned": {"language": 0.2}}}
    assert gain_interval_note(boot, "language") == "95% interval +2.5 to +21.0% (test TRs resampled in blocks)"
    assert difference_interval_note(boot, "tuned", "control", "language") == (
        "95% interval -0.010 to +0.030; tuned above in 80% of resamples of the test TRs")
    assert gain_interval_note({}, "language") == "" and difference_interval_note({}, "tuned", "control", "language") == ""
    from demo_report import impact_interval_note
    boot.update(low_level_impact_difference_ci95={"tuned - pretrained": {"language": [-4.0, 1.5]}},
                low_level_impact_share_of_samples_above={"tuned - pretrained": {"language": 0.25}})
    assert impact_interval_note(boot, "tuned", "pretrained", "language") == (
        "95% interval -4.0 to +1.5 points; tuned below in 75% of resamples of the test TRs")
    assert impact_interval_note(boot, "pretrained", "tuned", "language") == (
        "95% interval -1.5 to +4.0 points; pretrained below in 25% of resamples of the test TRs")
    assert impact_interval_note(boot, "tuned", "pretrained", "auditory") == ""
    boot["low_level_impact_difference_ci95"]["tuned - pretrained"]["auditory"] = [float("nan")] * 2  # undefined
    boot["low_level_impact_share_of_samples_above"]["tuned - pretrained"]["auditory"] = float("nan")
    assert impact_interval_note(boot, "tuned", "pretrained", "auditory") == (
        "no interval: the impact is undefined in some resamples of the test TRs")


def test_cpu_line_names_the_model_and_its_vector_instructions(tmp_path):
    from demo_report import cpu_line, write_seed_summary
    intel = {"vendor": "GenuineIntel", "family": 6, "model": 207, "name": "Intel(R) Xeon(R) Processor",
             "capability": "AVX512"}
    assert cpu_line(intel) == "Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207, AVX512)"
    assert cpu_line(None) == "unknown"  # a run recorded before the CPU was
    amd = {"vendor": "AuthenticAMD", "family": 25, "model": 17, "name": None, "capability": None}
    assert cpu_line(amd) == "unnamed (AuthenticAMD family 25 model 17, unknown vector instructions)"
    result = {"checks": [{"finding": "language gain", "measured": 1.0, "holds": False}], "models": ["pretrained"],
              "alignment": {"pretrained": {"language": 0.1}}, "change_pct": {"pretrained": {"language": 0.0}}}
    text = write_seed_summary(tmp_path, {0: dict(result, settings={"cpu": intel}), 1: dict(result, settings={"cpu": amd}),
                                         2: dict(result, settings={"cpu": intel})})
    # every machine a seed ran on, once each, in seed order
    assert f"CPU: {cpu_line(intel)} / {cpu_line(amd)} (another CPU model" in text


def test_report_header_names_the_toolkit_commit_and_uncommitted_changes():
    from demo_report import _versions_line
    assert _versions_line({"toolkit": {"commit": "0123456789abcdef", "modified": False}, "torch": "2.5.1"}) == (
        "toolkit 0123456789 · torch 2.5.1")
    assert _versions_line({"toolkit": {"commit": "0123456789abcdef", "modified": True}, "torch": "2.5.1"}) == (
        "toolkit 0123456789 with uncommitted changes · torch 2.5.1")
    assert _versions_line({"toolkit": {"commit": None, "modified": None}, "torch": "2.5.1"}) == (
        "toolkit unknown (not a git checkout) · torch 2.5.1")


def test_seeds_resume_reads_back_only_seeds_finished_with_the_same_settings_and_clean_code(tmp_path, monkeypatch):
    ran = []
    code = {"commit": "a" * 40, "modified": False}
    monkeypatch.setattr(run_utils, "toolkit_version", lambda: dict(code))

    def fake_pipeline(out, data, seed, quick, progress, size="demo", diagnostics=False, settings=None, teacher=False):
        ran.append(seed)
        assert (out, data) == (tmp_path / "runs" / f"seed_{seed}", tmp_path / "data" / f"seed_{seed}")  # one each
        result = {"checks": [{"finding": "language gain", "expected": ">= +20%", "measured": 10.0 + seed,
                              "holds": False}], "models": ["pretrained"],
                  "alignment": {"pretrained": {"language": 0.1}}, "change_pct": {"pretrained": {"language": 0.0}},
                  "settings": settings}
        atomic_io.write_json_atomic(out / "findings.json", result)
        return result
    monkeypatch.setattr(run_demo, "run_pipeline", fake_pipeline)

    def demo(*flags):
        ran.clear()
        assert run_demo.main(["--out", str(tmp_path / "runs"), "--data", str(tmp_path / "data"), "--seeds", "0", "1",
                              "--no-progress", *flags]) == 0
        return list(ran)

    assert demo() == [0, 1]
    assert demo("--resume") == []  # both finished with these settings by this commit
    assert "| language gain | +10.000 ✗ | +11.000 ✗ | 0 of 2 |" in (tmp_path / "runs" / "SEEDS.md").read_text()
    (tmp_path / "runs" / "seed_1" / "findings.json").unlink()  # as if killed during seed 1
    assert demo("--resume") == [1]
    (tmp_path / "runs" / "seed_0" / "findings.json").write_text('{"settings": ')  # damaged by something else
    assert demo("--resume") == [0]
    assert demo("--resume", "--quick") == [0, 1]  # other settings
    assert demo("--resume", "--quick") == []
    assert "CPU: " in (tmp_path / "runs" / "SEEDS.md").read_text()
    cpu = run_utils.cpu_identity()
    other = dict(cpu, model=(cpu["model"] or 0) + 1)  # never this machine's (a fixed one failed on that very CPU)
    monkeypatch.setattr(run_utils, "cpu_identity", lambda: dict(other))
    assert demo("--resume", "--quick") == [0, 1]  # another CPU model: other digits, so the seeds run again
    assert demo("--resume", "--quick") == []
    code["commit"] = "b" * 40
    assert demo("--resume", "--quick") == [0, 1]  # other code
    code["modified"] = True
    assert demo("--resume", "--quick") == [0, 1] and demo("--resume", "--quick") == [0, 1]  # code not committed
    code.update(commit=None, modified=None)  # not a git checkout: an earlier run's code cannot be told apart
    assert demo("--resume", "--quick") == [0, 1] and demo("--resume", "--quick") == [0, 1]
    assert demo() == [0, 1]  # without --resume every seed runs
    with pytest.raises(SystemExit):
        run_demo.main(["--resume"])  # a single seed is one run
    with pytest.raises(SystemExit):
        run_demo.main(["--seeds", "0", "1", "0", "--out", str(tmp_path / "dup")])  # seed 0 would run twice
    with pytest.raises(SystemExit) as exit_:
        run_demo.main(["--seed", "1", "--seeds", "0", "1", "--out", str(tmp_path / "dup")])  # --seed was ignored
    assert exit_.value.code == 2
    assert not (tmp_path / "dup").exists()


def test_out_must_be_new_empty_or_an_earlier_demo_output_and_a_refused_one_is_left_untouched(tmp_path, monkeypatch,
                                                                                              capsys):
    import json
    ran, data = [], tmp_path / "data"

    def fake_pipeline(out, data, seed, quick, progress, size="demo", diagnostics=False, settings=None, teacher=False):
        ran.append(seed)
        raise SystemExit("pipeline reached")  # the check under test comes before any step
    monkeypatch.setattr(run_demo, "run_pipeline", fake_pipeline)
    # a real experiment's folder: its tuned model is what the demo's `--overwrite` tuning would replace
    real = tmp_path / "experiment"
    (real / "train" / "tuned").mkdir(parents=True)
    (real / "train" / "tuned" / "config.json").write_text('{"lr": 1e-4}')
    before = sorted((p.relative_to(real), p.read_bytes() if p.is_file() else None) for p in real.rglob("*"))
    for flags in ([], ["--seeds", "0", "1"]):
        assert run_demo.main(["--out", str(real), "--data", str(data), "--no-progress", *flags]) == run_utils.EXIT_USAGE
        err = capsys.readouterr().err  # names the folder, what a demo folder holds and what was found
        assert f"error: {real}: not a run_demo.py output" in err and "'findings.json'" in err and "['train']" in err
    assert sorted((p.relative_to(real), p.read_bytes() if p.is_file() else None) for p in real.rglob("*")) == before
    (tmp_path / "data_file").write_text("x")  # --data must be a folder the miniatures can be built in
    assert run_demo.main(["--out", str(tmp_path / "new"), "--data", str(tmp_path / "data_file"), "--no-progress"]) == \
        run_utils.EXIT_USAGE
    assert "data_file: --data (where the miniatures are built) must be a folder, found a file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # a --seeds folder whose seed folder is someone else's
    seeds = tmp_path / "seeds"
    (seeds / "seed_1").mkdir(parents=True)
    (seeds / "seed_1" / "weights.safetensors").write_bytes(b"x")
    (seeds / "seed_0").mkdir()
    (seeds / "seed_0" / run_demo.RUN_RECORD).write_text("{}")
    assert "seed_1" in run_demo.demo_out_problem([seeds, seeds / "seed_0", seeds / "seed_1"])
    assert ran == []
    # accepted: missing, empty, a killed single run (its run record only), a finished one, a --seeds run's top
    empty = tmp_path / "empty"
    empty.mkdir()
    killed = tmp_path / "killed"
    (killed / "train" / "tuned").mkdir(parents=True)
    (killed / run_demo.RUN_RECORD).write_text(json.dumps({"seed": 0}))
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "findings.json").write_text("{}")
    for ok in (tmp_path / "new", empty, killed, finished, seeds / "seed_0", seeds):
        assert run_demo.demo_out_problem([ok]) is None, ok
        with pytest.raises(SystemExit, match="pipeline reached"):
            run_demo.main(["--out", str(ok), "--data", str(data), "--no-progress"])
    assert ran == [0] * 6
    # a demo still running on the same --out or --data (a second `make demo` in this checkout): refused untouched.
    # A lock file's text names its last holder, rewritten by each claim (the refused run held --out for a moment
    # before finding --data held): only its presence counts. Every claim here gets a new time, as it would a
    # second later (the lock text of --out then differed, and this test failed now and then).
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(run_utils, "timestamp", lambda: f"tick {next(ticks)}")

    def snapshot():
        return sorted((p.relative_to(tmp_path), p.read_bytes() if p.is_file() and p.name != run_utils.RUN_LOCK else None)
                      for p in tmp_path.rglob("*"))
    for held in (finished, data):
        with run_utils.output_claim(held, "run_demo.py run"):
            before = snapshot()
            assert run_demo.main(["--out", str(finished), "--data", str(data), "--no-progress"]) == 2
            assert f"error: {held}: another run_demo.py run is writing into it (pid " in capsys.readouterr().err
            assert snapshot() == before
    assert ran == [0] * 6


def test_pipeline_writes_its_settings_and_versions_first(tmp_path, monkeypatch):
    import json
    import demo_report
    seen = []

    def step(name, fn, *args):  # the record is there before the first step runs, an earlier run's findings not
        seen.append((tmp_path / "out" / run_demo.RUN_RECORD).is_file()
                    and not (tmp_path / "out" / "findings.json").exists())
    monkeypatch.setattr(run_demo, "_step", step)
    monkeypatch.setattr(demo_report, "findings", lambda out, models: {"models": models})
    monkeypatch.setattr(demo_report, "write_report", lambda *a, **k: None)
    settings = run_demo.demo_settings(3, True, "demo", False)
    assert (settings["device"], settings["precision"]) == ("cpu", "fp32")  # a GPU's run is another setting
    import torch
    monkeypatch.setattr(run_utils, "resolve_device", lambda choice: torch.device("cuda"))
    assert {k: run_demo.demo_settings(3, True, "demo", False)[k] for k in ("device", "precision")} == {
        "device": "cuda", "precision": "bf16"}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "findings.json").write_text("{}")  # an earlier run's: its presence would mean "finished"
    run_demo.run_pipeline(tmp_path / "out", tmp_path / "data", seed=3, quick=True, progress=False, settings=settings)
    assert seen and all(seen)
    record = json.loads((tmp_path / "out" / run_demo.RUN_RECORD).read_text())
    assert {k: record[k] for k in settings} == json.loads(json.dumps(settings))
    assert record["versions"]["torch"] and record["command"] and record["created"]


def _run_folder(out: Path, language: dict, auditory: dict, impact: dict, probe: dict, preference: dict) -> Path:
    """The result files `demo_report.findings` reads, for models pretrained/tuned/control, from per-model numbers:
    language/auditory cc_norm, language-ROI low-level impact, semantic-probe F1 macro, semantic preference."""
    def write(path, obj):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))

    cc = {m: {"language": language[m], "auditory": auditory[m]} for m in language}
    change = {m: {r: round(100 * (cc[m][r] / cc["pretrained"][r] - 1), 9) for r in cc[m]} for m in cc}
    write(out / "eval" / "comparison" / "comparison.json",
          {"upper_middle_cc_norm": cc, "change_vs_first_pct": change,
           "low_level_impact_pct": {m: {"language": v, "auditory": 50.0} for m, v in impact.items()}})
    write(out / "eval" / "tuned" / "summary.json", {"upper_middle_layers": [3]})
    task = out / "probes" / "semantic_category"
    write(task / "comparison.json", {"upper_middle_mean": {m: {"f1_macro": v} for m, v in probe.items()}})
    write(task / "pretrained" / "results.json", {"kind": "multiclass", "classes": list("abcdefgh")})
    write(task / "tuned" / "results.json", {"kind": "multiclass", "classes": list("abcdefgh"),
                                            "chance": {"accuracy": 0.125}})
    for m, v in preference.items():
        write(out / "probes" / "semantic_preference" / m / "results.json", {"upper_middle_mean": {"preference": v}})
    return out


def test_findings_verdicts_against_hand_set_numbers(tmp_path):
    from demo_report import findings

    def verdicts(out):
        return [(c["holds"], round(c["measured"], 6)) for c in findings(out)["checks"]]

    models = ("pretrained", "tuned", "control")
    # every finding holds: +30% language gain (auditory +5%), above the control, impact and probe and preference up
    holds = _run_folder(tmp_path / "holds", dict(zip(models, (0.10, 0.13, 0.11))), dict(zip(models, (0.40, 0.42, 0.41))),
                        dict(zip(models, (40.0, 30.0, 45.0))), dict(zip(models, (0.20, 0.30, 0.25))),
                        dict(zip(models, (-0.05, 0.02, -0.06))))
    assert verdicts(holds) == [(True, 30.0), (True, 0.02), (True, 5.0), (True, -10.0), (True, 0.1), (True, 0.07)]
    # each one fails: +15% (below the aim), under the control, auditory gains more, impact, probe, preference down
    fails = _run_folder(tmp_path / "fails", dict(zip(models, (0.10, 0.115, 0.12))), dict(zip(models, (0.40, 0.48, 0.41))),
                        dict(zip(models, (40.0, 41.0, 45.0))), dict(zip(models, (0.20, 0.10, 0.25))),
                        dict(zip(models, (-0.05, -0.08, -0.06))))
    assert verdicts(fails) == [(False, 15.0), (False, -0.005), (False, 20.0), (False, 1.0), (False, -0.1),
                               (False, -0.03)]
    # ties are not gains: tuned equal to the control, auditory gaining as much as language, impact, probe and
    # preference unchanged; the probe's chance is its task's (4 classes here), not a fixed 1/8
    ties = _run_folder(tmp_path / "ties", dict(zip(models, (0.10, 0.13, 0.13))), dict(zip(models, (0.40, 0.52, 0.41))),
                       dict(zip(models, (40.0, 40.0, 45.0))), dict(zip(models, (0.20, 0.20, 0.22))),
                       dict(zip(models, (-0.05, -0.05, -0.06))))
    (ties / "probes" / "semantic_category" / "tuned" / "results.json").write_text(
        json.dumps({"kind": "multiclass", "classes": list("abcd"), "chance": {"accuracy": 0.25}}))
    assert verdicts(ties) == [(True, 30.0), (False, 0.0), (False, 30.0), (False, 0.0), (False, 0.0), (False, 0.0)]
    assert findings(ties)["checks"][4]["note"].startswith("every model below chance (0.250)")  # 0.25 > every score
    # the auditory gain is compared with the tuned model's language gain, not the control's
    between = _run_folder(tmp_path / "between", dict(zip(models, (0.10, 0.13, 0.11))),
                          dict(zip(models, (0.40, 0.48, 0.41))), dict(zip(models, (40.0, 30.0, 45.0))),
                          dict(zip(models, (0.20, 0.30, 0.25))), dict(zip(models, (-0.05, 0.02, -0.06))))
    assert verdicts(between)[2] == (True, 20.0)  # +20% auditory: under the tuned +30%, above the control's +10%
    # the aim itself counts as reached; without a control there is no control check
    edge = _run_folder(tmp_path / "edge", dict(zip(models, (0.10, 0.12, 0.11))), dict(zip(models, (0.40, 0.42, 0.41))),
                       dict(zip(models, (40.0, 30.0, 45.0))), dict(zip(models, (0.20, 0.30, 0.25))),
                       dict(zip(models, (-0.05, 0.02, -0.06))))
    checks = findings(edge, models=("pretrained", "tuned"))["checks"]
    assert checks[0]["holds"] and checks[0]["measured"] == pytest.approx(20.0)
    assert [c["finding"] for c in checks][:2] == ["language-ROI alignment gain of the tuned model",
                                                  "auditory ROI does not gain in the same way"]
