"""eval_phonemes.py / eval_downstream.py end to end on the miniature layouts with tiny models."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import brain_trainer_story
import eval_downstream
import eval_phonemes
import probe_tasks
import run_utils
from conftest import killed_at_fit, probe_args
from downstream_data import TIMIT_39


def test_running_out_of_device_memory_names_the_batch_to_lower(downstream, tiny_models, tmp_path, monkeypatch,
                                                                capsys):
    import probe_tasks
    import torch

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
    monkeypatch.setattr(probe_tasks, "extract_missing_features", out_of_memory)
    assert eval_phonemes.main(probe_args(tiny_models["whisper"], downstream / "timit", tmp_path / "p", tmp_path / "c",
                                    "--task", "sentence_type", "--batch-size", "8")) == 2
    assert ("error: the device ran out of memory (CUDA out of memory. Tried to allocate 512.00 MiB): lower "
            "--batch-size (utterances per forward pass, now 8): the same features up to float rounding") in \
        capsys.readouterr().err


def test_a_whisper_tuned_in_another_mode_is_noted(downstream, tiny_models, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_models["whisper"], tuned)
    (tuned / "brain_tuning.json").write_text(json.dumps({"epoch": 1, "subject": "UTS01", "stories": {},
                                                         "whisper_mode": "truncate"}))
    for mode, noted in (("pad30", True), ("truncate", False)):
        assert eval_phonemes.main(probe_args(str(tuned), downstream / "timit", tmp_path / mode, tmp_path / "c",
                                             "--task", "sentence_type", "--layers", "2", "--whisper-mode", mode)) == 0
        assert (f"note: {tuned} was brain-tuned with --whisper-mode truncate and is read here with --whisper-mode "
                f"pad30" in capsys.readouterr().err) is noted


def test_a_rerun_into_the_same_folder_leaves_only_its_own_files(downstream, tiny_models, tmp_path):
    def probe(*extra):
        return eval_phonemes.main(probe_args(tiny_models["wav2vec2"], downstream / "timit", tmp_path / "r",
                                             tmp_path / "c", *extra))
    assert probe("--task", "sentence_type") == 0
    assert {"layer_1.json", "layer_2.json", "sentence_type_by_layer.png"} <= set(os.listdir(tmp_path / "r"))
    assert probe("--task", "phonemes", "--layers", "2") == 0  # another task and fewer layers into the same folder
    assert sorted(set(os.listdir(tmp_path / "r")) - {".run.lock"}) == ["config.json", "layer_2.json",
                                                                      "phonemes_by_layer.png", "results.json", "table.md"]
    assert json.loads((tmp_path / "r" / "layer_2.json").read_text())["task"] == "phonemes"


def _probe_utterance_task_and_story_words(mini, downstream, tiny_models, tmp_path, *extra):
    """sentence_type with a 2-probe null into tmp_path/p, story_word_category over 3 folds into tmp_path/w:
    3 + 2 * 3 probes (the task's and its null's; each fold's model and context-label baseline)."""
    common = ["--whisper-mode", "truncate", "--layers", "2", *extra]
    assert eval_phonemes.main(probe_args(tiny_models["whisper"], downstream / "timit", tmp_path / "p", tmp_path / "c",
                                    "--task", "sentence_type", "--permutations", "2", *common)) == 0
    assert eval_downstream.main(probe_args(tiny_models["whisper"], mini / "ds003020", tmp_path / "w", tmp_path / "c",
                                      "--task", "story_word_category", "--max-per-word", "1", "--folds", "3",
                                      "--word-labels", str(mini / "ground_truth" / "word_categories.tsv"),
                                      *common)) == 0


@pytest.mark.parametrize("task", ["phonemes", "phonemes_frame", "sentence_type"])
def test_timit_tasks_write_results_and_hit_the_cache(downstream, tiny_models, tmp_path, task, capsys):
    args = probe_args(tiny_models["whisper"], downstream / "timit", tmp_path / "r", tmp_path / "cache",
                 "--task", task, "--whisper-mode", "truncate")
    assert eval_phonemes.main(args) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["layers"] == [1, 2] and set(res["per_layer"]) == {"1", "2"}
    assert res["kind"] == ("multilabel" if task == "phonemes" else "multiclass")
    assert res["classes"] == (["SA", "SI", "SX"] if task == "sentence_type" else list(TIMIT_39))
    for name in ("table.md", "config.json", f"{task}_by_layer.png"):
        assert (tmp_path / "r" / name).is_file()
    n = res["n_rows"]  # each split's count in words (a Python dict was printed)
    assert f"rows: train {n['train']}, val {n['val']}, test {n['test']}\n" in (tmp_path / "r" / "table.md").read_text()
    assert res["feature_cache_hits"] == 0
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["args"]
    assert recorded["device"] == "cpu" and recorded["inference_threads"] >= 1  # resolved, not "auto" and None
    assert recorded["frame_step"] == 4  # the default, also where no task reads it
    assert eval_phonemes.main(args) == 0
    again = json.loads((tmp_path / "r" / "results.json").read_text())
    assert again["feature_cache_hits"] == 3                       # train, val, test read back
    assert again["per_layer"] == res["per_layer"]                 # deterministic probes
    assert res["frame_step"] == (4 if task == "phonemes_frame" else None)
    if task == "phonemes_frame":  # other frames sampled: --compare refuses to table them side by side
        assert eval_phonemes.main(probe_args(tiny_models["whisper"], downstream / "timit", tmp_path / "r8",
                                             tmp_path / "cache", "--task", task, "--whisper-mode", "truncate",
                                             "--frame-step", "8")) == 0
        assert eval_phonemes.main(["--compare", str(tmp_path / "r"), str(tmp_path / "r8"), "--out",
                                   str(tmp_path / "c")]) == 2
        assert f"{tmp_path / 'r8'}: --frame-step 8, expected 4 like" in capsys.readouterr().err
        assert not (tmp_path / "c").exists()


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_features_cached_in_bf16_are_not_read_by_an_fp32_run(downstream, tiny_models, tmp_path, monkeypatch):
    import probes
    args = probe_args(tiny_models["wav2vec2"], downstream / "timit", tmp_path / "r", tmp_path / "cache",
                 "--task", "sentence_type")
    assert eval_phonemes.main(args) == 0
    monkeypatch.setattr(probes, "uses_bf16", lambda precision, device: True)  # as a bf16 run on a GPU would
    assert eval_phonemes.main(args) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["feature_cache_hits"] == 0
    monkeypatch.undo()
    assert eval_phonemes.main(args) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["feature_cache_hits"] == 3


def test_results_json_is_written_last(tmp_path, monkeypatch):
    import plotting
    import probe_tasks
    result = {"task": "emotion", "model": "m", "layers": [1, 2], "upper_middle_layers": [2],
              "upper_middle_mean": {"f1_macro": 0.5}, "per_layer": {}}
    args = (tmp_path / "r", result, {"args": {}}, "| table |\n", "emotion_by_layer.png", {"f1": {"m": [0.1, 0.2]}}, "F1")
    probe_tasks.write_run(*args)
    assert json.loads((tmp_path / "r" / "results.json").read_text()) == result

    def fails(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(plotting, "plot_layer_curves", fails)
    with pytest.raises(OSError):  # a rewrite that dies before its end leaves no results.json: not a result
        probe_tasks.write_run(*args)
    assert not (tmp_path / "r" / "results.json").exists() and (tmp_path / "r" / "config.json").is_file()


def test_a_killed_probe_run_resumes_from_its_finished_layers(downstream, tiny_models, tmp_path, monkeypatch, capsys):
    # a base model's frame-level TIMIT probe takes ~40-74 s per layer: a rerun after a kill refits only what did not
    # finish, and reads back a layer only when its features, labels, settings and code are the same
    def args(out, *extra):
        return probe_args(tiny_models["whisper"], downstream / "timit", out, tmp_path / "c", "--task", "sentence_type",
                     "--whisper-mode", "truncate", *extra)
    assert eval_phonemes.main(args(tmp_path / "whole")) == 0
    calls = killed_at_fit(monkeypatch, 2, lambda: eval_phonemes.main(args(tmp_path / "k")), tmp_path / "k")  # layer 2
    capsys.readouterr()
    assert eval_phonemes.main(args(tmp_path / "k")) == 0  # the killed run's folder is taken as a probe output
    assert len(calls) == 1  # layer 2 only
    assert "layer(s) [1] read back from an earlier run with the same inputs" in capsys.readouterr().err
    assert json.loads((tmp_path / "k" / "config.json").read_text())["layers_reused"] == [1]
    whole, resumed = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "k"))
    assert resumed["per_layer"] == whole["per_layer"] and resumed["upper_middle_mean"] == whole["upper_middle_mean"]
    # anything the fit reads changed: fitted again
    calls[:] = []
    assert eval_phonemes.main(args(tmp_path / "k", "--seed", "1")) == 0
    assert len(calls) == 2 and json.loads((tmp_path / "k" / "config.json").read_text())["layers_reused"] == []
    calls[:] = []
    assert eval_phonemes.main(args(tmp_path / "k", "--seed", "1", "--permutations", "1")) == 0
    assert len(calls) == 2 * 2  # each layer's probe and its one permutation
    calls[:] = []
    (tmp_path / "k" / "layer_2.json").write_text('{"task": "sentence_type", "fit_')  # cut short by a full disk
    assert eval_phonemes.main(args(tmp_path / "k", "--seed", "1", "--permutations", "1")) == 0
    assert len(calls) == 2 and json.loads((tmp_path / "k" / "config.json").read_text())["layers_reused"] == [1]


def test_other_tasks_on_pretrained_and_tuned_models(mini, downstream, tiny_models, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    assert brain_trainer_story.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                                     tiny_models["wav2vec2"], "--nc-dir", str(mini / "subject_NCs"), "--out-dir",
                                     str(tuned), "--batch-size", "16", "--num-epochs", "1", "--no-progress"]) == 0
    for model, name in ((tiny_models["wav2vec2"], "pre"), (str(tuned / "best"), "tuned")):
        for task, folder in (("commands", "speech_commands"), ("emotion", "crema_d"), ("intent", "slurp"),
                             ("semantic_category", "words"), ("phonemes", "timit"), ("sentence_type", "timit")):
            out = tmp_path / task / name
            script = eval_phonemes if folder == "timit" else eval_downstream
            assert script.main(probe_args(model, downstream / folder, out, tmp_path / "c", "--task", task,
                                     "--layers", "2")) == 0
            res = json.loads((out / "results.json").read_text())
            assert res["n_rows"]["test"] > 0 and 0 <= res["per_layer"]["2"]["test"]["accuracy"] <= 1
            um = res["upper_middle_mean"]  # the batch log's one line per result
            assert (f"{task} · {model}: upper-middle layers [2]: f1_macro {um['f1_macro']:.3f}, f1_micro "
                    f"{um['f1_micro']:.3f}, accuracy {um['accuracy']:.3f} ({out / 'table.md'})") in capsys.readouterr().out
    assert eval_downstream.main(["--compare", str(tmp_path / "emotion" / "pre"), str(tmp_path / "emotion" / "tuned"),
                                 "--out", str(tmp_path / "cmp")]) == 0
    cmp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert cmp["models"] == ["pre", "tuned"] and cmp["change_vs_first_pct"]["pre"]["accuracy"] == 0.0
    assert (tmp_path / "cmp" / "emotion_by_layer.png").is_file()
    # bad --compare input: exit 2 with the reason, nothing written
    other_data = tmp_path / "emotion" / "subset"  # as if probed on a subset of the corpus
    shutil.copytree(tmp_path / "emotion" / "tuned", other_data)
    res = json.loads((other_data / "results.json").read_text())
    res["utterances"]["test"] -= 1
    (other_data / "results.json").write_text(json.dumps(res))
    edited = tmp_path / "emotion" / "edited"  # a null where the probe writes a score (a JSON tool's NaN)
    shutil.copytree(tmp_path / "emotion" / "tuned", edited)
    (edited / "results.json").write_text(json.dumps({**res, "upper_middle_mean": {**res["upper_middle_mean"],
                                                                                   "accuracy": None}}))
    for dirs, reason in (([tmp_path / "emotion" / "pre", tmp_path], f"{tmp_path / 'results.json'}: not a probe result"),
                         ([tmp_path / "emotion" / "pre", edited], f"{edited / 'results.json'}: 'upper_middle_mean' "
                                                                  f"should map names to numbers, as probe writes it"),
                         ([tmp_path / "emotion" / "pre", other_data],
                          f"{other_data}: utterances {res['utterances']}, expected "),
                         ([tmp_path / "emotion" / "pre", tmp_path / "intent" / "pre"],
                          f"result folders of one task; found emotion in {tmp_path / 'emotion' / 'pre'}, "
                          f"intent in {tmp_path / 'intent' / 'pre'}")):
        assert eval_downstream.main(["--compare", *map(str, dirs), "--out", str(tmp_path / "bad")]) == 2
        assert reason in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_model_with_non_finite_hidden_states_is_refused_by_the_probes(mini, downstream, nan_model, tmp_path, capsys):
    # an utterance task (the features checked before the split is cached) and a word-segment one
    pairs = ["--pairs", str(downstream / "words" / "semantic_pairs.tsv")]
    for script, data, task, where, extra in (
            (eval_phonemes, downstream / "timit", "sentence_type", "the train split", []),
            (eval_downstream, mini / "ds003020", "semantic_preference", "the word segments", pairs)):
        out = tmp_path / task
        assert script.main(probe_args(nan_model, data, out, tmp_path / "c", "--task", task, *extra)) == 2
        assert (f"{nan_model}: the hidden states of layer(s) [2] hold NaN or inf on {where}"
                in capsys.readouterr().err)
        assert not (out / "results.json").exists()
    assert not list((tmp_path / "c").rglob("*.npz"))


def test_weight_decay_fit_flag_reaches_every_probe_and_is_recorded(mini, downstream, tiny_models, tmp_path,
                                                                      monkeypatch, capsys):
    # --weight-decay-fit side-by-side on a CPU: every probe (the task's, its permutation null, the cross-validated
    # folds and their baseline) fits its 5 weight decays as one stacked layer, and config.json says so
    import probes
    groups, fit = [], probes._fit_weight_decays
    monkeypatch.setattr(probes, "_fit_weight_decays", lambda *a: groups.append(len(a[6])) or fit(*a))
    common = ["--whisper-mode", "truncate", "--layers", "2", "--weight-decay-fit", "side-by-side"]
    _probe_utterance_task_and_story_words(mini, downstream, tiny_models, tmp_path, *common[-2:])
    assert groups == [5] * (3 + 2 * 3)  # probe and null of the utterance task; model and baseline, 3 folds each
    for out in ("p", "w"):
        cfg = json.loads((tmp_path / out / "config.json").read_text())
        assert cfg["probe_fit"]["weight_decays_fitted"] == "side by side"
        assert cfg["args"]["weight_decay_fit"] == "side-by-side"
    groups.clear()  # one-after-another, as on a CPU by default
    assert eval_phonemes.main(probe_args(tiny_models["whisper"], downstream / "timit", tmp_path / "p2", tmp_path / "c",
                                    "--task", "sentence_type", *common[:-1], "one-after-another")) == 0
    assert groups == [1] * 5
    assert json.loads((tmp_path / "p2" / "config.json").read_text())["probe_fit"]["weight_decays_fitted"] == \
        "one after another"
    # where no probe is fitted, the flag is refused rather than ignored
    assert eval_downstream.main(probe_args(tiny_models["whisper"], mini / "ds003020", tmp_path / "sp", tmp_path / "c",
                                      "--task", "semantic_preference", *common)) == 2
    assert "--weight-decay-fit applies to tasks that fit probes, not semantic_preference" in capsys.readouterr().err
    assert eval_phonemes.main(["--compare", str(tmp_path / "p"), str(tmp_path / "p2"), "--out", str(tmp_path / "x"),
                               "--weight-decay-fit", "side-by-side", "--revision", "v1"]) == 2
    assert "--weight-decay-fit, --revision would be ignored" in capsys.readouterr().err
    assert not (tmp_path / "sp" / "results.json").exists() and not (tmp_path / "x").exists()


def test_clear_errors(downstream, tiny_models, tmp_path, capsys):
    base = probe_args(tiny_models["whisper"], downstream / "timit", tmp_path / "r", tmp_path / "c")
    assert eval_phonemes.main(base + ["--layers", "9"]) == 2          # layer out of range
    assert eval_phonemes.main(probe_args(tiny_models["whisper"], tmp_path / "nowhere", tmp_path / "r",
                                    tmp_path / "c")) == 3             # dataset missing
    assert f"--data-dir {tmp_path / 'nowhere'}: expected the dataset's folder, found nothing" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert eval_downstream.main(["--task", "commands", "--data-dir", str(tmp_path / "a_file"), "--model-name",
                                 tiny_models["hubert"], "--out", str(tmp_path / "r")]) == 3
    assert "a_file: expected the dataset's folder, found a file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything is written
    assert eval_downstream.main(["--compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "--compare sets result folders against the first: give at least 2, found 1" in capsys.readouterr().err
    assert eval_downstream.main(["--compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"),
                                 "--model-name", "some/model"]) == 2
    assert "--compare only reads earlier result folders; --model-name would be ignored" in capsys.readouterr().err
    assert eval_downstream.main(["--task", "emotion", "--data-dir", str(downstream / "crema_d"), "--model-name",
                                 tiny_models["hubert"], "--out", str(tmp_path / "e"), "--pairs", "p.tsv"]) == 2
    assert "--pairs applies to --task semantic_preference, not emotion" in capsys.readouterr().err
    assert eval_downstream.main(["--task", "semantic_preference", "--data-dir", str(downstream), "--model-name",
                                 tiny_models["hubert"], "--out", str(tmp_path / "e"), "--word-labels", "w.tsv"]) == 2
    assert "--word-labels applies to --task story_word_category, not semantic_preference" in capsys.readouterr().err
    assert eval_phonemes.main(base + ["--task", "sentence_type", "--frame-step", "2"]) == 2  # frames of no task
    assert "--frame-step applies to --task phonemes_frame, not sentence_type" in capsys.readouterr().err
    assert eval_downstream.main(["--task", "emotion", "--data-dir", str(downstream / "crema_d"), "--model-name",
                                 tiny_models["hubert"], "--out", str(tmp_path / "e"), "--max-per-word", "3"]) == 2
    assert "--max-per-word applies to --task semantic_preference or story_word_category, not emotion" in \
        capsys.readouterr().err
    assert eval_downstream.main(["--task", "intent", "--data-dir", str(downstream / "slurp"), "--model-name",
                                 tiny_models["hubert"], "--out", str(tmp_path / "e"), "--stories", "souls"]) == 2
    assert "--stories applies to --task semantic_preference or story_word_category, not intent" in \
        capsys.readouterr().err
    assert eval_phonemes.main(["--compare", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "e"),
                               str(tmp_path / "f")]) == 2
    assert "--compare writes one --out folder, found 2" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


def test_layers_are_sorted_once_and_default_to_every_transformer_layer(tiny_models):
    import probe_cli
    parser = probe_cli.common_parser("probe", ["phonemes"], "TIMIT root")
    common = ["--model-name", tiny_models["hubert"], "--out", "unused"]
    assert probe_cli.load_models(parser.parse_args([*common, "--layers", "2", "0", "2"]))[0].layers == [0, 2]
    assert probe_cli.load_models(parser.parse_args(common))[0].layers == [1, 2]  # hidden state 0 only when asked


def test_out_holding_another_programs_files_is_refused_untouched(downstream, tiny_models, tmp_path, capsys):
    import shutil
    model = shutil.copytree(tiny_models["wav2vec2"], tmp_path / "model")  # e.g. --out mistyped as the model
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    data, task = downstream / "speech_commands", ("--task", "commands", "--layers", "1")
    assert eval_downstream.main(probe_args(str(model), data, model, tmp_path / "c", *task)) == 2
    assert f"{model}: not a probe result" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # its config.json kept
    other = tmp_path / "other"  # another program's config.json whose "args" is a command line that says "task"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"args": "train.py --task asr"}))
    assert eval_downstream.main(probe_args(str(model), data, other, tmp_path / "c", *task)) == 2
    assert f"{other}: not a probe result" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["config.json"]
    killed = tmp_path / "killed"  # a probe run killed between its config.json and its results.json
    killed.mkdir()
    (killed / "config.json").write_text(json.dumps({"args": {"task": "commands"}}))
    assert eval_downstream.main(probe_args(str(model), data, killed, tmp_path / "c", *task)) == 0
    assert f"note: --layers [1] holds none of {model}'s upper-middle layers ([2] of 2)" in capsys.readouterr().err
    assert json.loads((killed / "results.json").read_text())["task"] == "commands"
    assert eval_downstream.main(["--compare", str(killed), str(killed), "--out", str(killed)]) == 2
    assert f"--out {killed} is one of the compared result folders" in capsys.readouterr().err
    # a probe run still writing into --out (a job resubmitted while the first runs): refused, its folder untouched
    with run_utils.output_claim(killed, "probe run"):
        before = {p.name: p.read_bytes() for p in killed.iterdir()}
        assert eval_downstream.main(probe_args(str(model), data, killed, tmp_path / "c", *task)) == 2
        assert f"{killed}: another probe run is writing into it (pid " in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in killed.iterdir()} == before
    with run_utils.output_claim(tmp_path / "cmp", "probe run"):  # so is a comparison into such a folder
        assert eval_downstream.main(["--compare", str(killed), str(killed), "--out", str(tmp_path / "cmp")]) == 2
        assert f"{tmp_path / 'cmp'}: another probe run is writing into it (pid " in capsys.readouterr().err
        assert [p.name for p in (tmp_path / "cmp").iterdir()] == [run_utils.RUN_LOCK]


def test_an_utterance_longer_than_whisper_takes_is_named_before_extraction(downstream, tiny_models, tmp_path, capsys):
    import numpy as np
    import soundfile as sf
    from conftest import link_tree
    first = sorted((downstream / "crema_d" / "AudioWAV").glob("*.wav"))[0]
    root = link_tree(downstream / "crema_d", tmp_path / "crema_d", without=(f"AudioWAV/{first.name}",))
    sf.write(root / "AudioWAV" / first.name, np.zeros(16000 * 31, np.float32), 16000)  # 31 s
    args = ["--task", "emotion", "--data-dir", str(root), "--model-name", tiny_models["whisper"], "--out",
            str(tmp_path / "e"), "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    assert eval_downstream.main(args) == 3
    assert (f"1 utterance(s) longer than the 30 s that {tiny_models['whisper']} takes: "
            f"{root / 'AudioWAV' / first.name} (31.0 s)") in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "c").exists()


def test_several_models_in_one_run_equal_each_alone(mini, downstream, tiny_models, tmp_path, capsys):
    """--model-name A B --out a b: per model the same results as a run alone (the shared bottom computed once)."""
    import torch

    import models
    tuned = tmp_path / "top_tuned"  # Whisper with its last block changed: front end and block 0 shared
    backbone, extractor, _ = models.load_backbone(tiny_models["whisper"])
    with torch.no_grad():
        for p in backbone.encoder.layers[-1].parameters():
            p.add_(0.05)
    backbone.save_pretrained(tuned)
    extractor.save_pretrained(tuned)
    names = [tiny_models["whisper"], str(tuned)]
    pairs = str(downstream / "words" / "semantic_pairs.tsv")
    labels = str(mini / "ground_truth" / "word_categories.tsv")
    runs = [(eval_downstream, downstream / "crema_d", ["--task", "emotion"]),
            (eval_phonemes, downstream / "timit", ["--task", "phonemes_frame", "--frame-step", "8"]),
            (eval_downstream, mini / "ds003020", ["--task", "semantic_preference", "--pairs", pairs,
                                                  "--max-per-word", "2"]),
            (eval_downstream, mini / "ds003020", ["--task", "story_word_category", "--word-labels", labels,
                                                  "--max-per-word", "2", "--folds", "4"])]
    for script, data, task in runs:
        common = ["--data-dir", str(data), "--whisper-mode", "truncate", "--no-progress", *task]
        outs = [tmp_path / task[1] / "together" / k for k in ("a", "b")]
        assert script.main(common + ["--model-name", *names, "--out", *map(str, outs),
                                     "--cache-dir", str(tmp_path / "c_together")]) == 0
        for name, out, k in zip(names, outs, "ab"):
            alone = tmp_path / task[1] / "alone" / k
            assert script.main(common + ["--model-name", name, "--out", str(alone),
                                         "--cache-dir", str(tmp_path / "c_alone")]) == 0
            res, ref = (json.loads((d / "results.json").read_text()) for d in (out, alone))
            assert res["model"] == name and res["per_layer"] == ref["per_layer"], (task[1], k)
            cfg = json.loads((out / "config.json").read_text())["args"]
            assert cfg["model_name"] == name and cfg["evaluated_with"] == [n for n in names if n != name]
        results = [json.loads((o / "results.json").read_text())["per_layer"] for o in outs]
        assert results[0]["1"] == results[1]["1"] and results[0]["2"] != results[1]["2"], task[1]  # block 1 differs
    # one --out per model, or a usage error that says so
    assert eval_downstream.main(["--data-dir", str(downstream / "crema_d"), "--task", "emotion", "--model-name",
                                 *names, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "expected one --out folder per --model-name (2), found 1" in capsys.readouterr().err


def test_semantic_category_permutation_null_in_results_and_table(downstream, tiny_models, tmp_path, capsys):
    args = probe_args(tiny_models["whisper"], downstream / "words", tmp_path / "r", tmp_path / "c", "--task",
                 "semantic_category", "--whisper-mode", "truncate", "--layers", "2", "--permutations", "5")
    assert eval_downstream.main(args) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    null = res["per_layer"]["2"]["permutation_null"]
    assert res["permutation_unit"] == "word" and null["n"] == 5
    assert 0 <= null["range95"][0] <= null["mean"] <= null["range95"][1] <= 1 and 1 / 6 <= null["p_above"] <= 1
    table = (tmp_path / "r" / "table.md").read_text()
    assert "5 probes refitted on labels shuffled among the words of each split" in table
    assert "With 5 permutations p cannot go below 0.167: --permutations 99 or more to test at 0.01." in table
    # the score itself is the run's without the null
    assert eval_downstream.main(probe_args(tiny_models["whisper"], downstream / "words", tmp_path / "plain", tmp_path / "c",
                                      "--task", "semantic_category", "--whisper-mode", "truncate", "--layers", "2")) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert plain["per_layer"]["2"]["test"] == res["per_layer"]["2"]["test"] and plain["permutation_unit"] is None
    assert "permutation_null" not in plain["per_layer"]["2"]
    capsys.readouterr()
    # tasks without a multiclass utterance label, and a negative count: usage errors (exit 2) that say why, before
    # any model is loaded (a model folder that is not there is not reached)
    for script, data, task, extra, reason in (
            (eval_phonemes, "timit", "phonemes", (), "multiclass utterance-level task; phonemes is multilabel"),
            (eval_downstream, "words", "semantic_preference", (), "probes (sentence_type, commands, emotion, intent, "
                                                                  "action, semantic_category), not semantic_preference"),
            (eval_downstream, "words", "story_word_category", ("--word-labels", "w.tsv"), "not story_word_category")):
        for model in (tiny_models["whisper"], str(tmp_path / "no_model")):
            assert script.main(probe_args(model, downstream / data, tmp_path / "x", tmp_path / "c", "--task", task,
                                          "--permutations", "3", *extra)) == 2
            assert reason in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        eval_downstream.main(probe_args(tiny_models["whisper"], downstream / "words", tmp_path / "x", tmp_path / "c",
                                   "--task", "semantic_category", "--permutations", "-1"))
    assert stopped.value.code == 2
    assert "argument --permutations: expected an integer >= 0, found -1" in capsys.readouterr().err
    assert not (tmp_path / "x" / "results.json").exists()
    with pytest.raises(SystemExit) as stopped:  # a fold to score, one to choose the probe, the rest to train it
        eval_downstream.main(probe_args(tiny_models["whisper"], downstream / "words", tmp_path / "x", tmp_path / "c",
                                        "--task", "story_word_category", "--folds", "2"))
    assert stopped.value.code == 2
    assert "argument --folds: expected an integer >= 3, found 2" in capsys.readouterr().err
    for task, flags, says in (  # flags that would be ignored by the task given: usage errors, as --frame-step's
            ("commands", ["--context", "5"], "--context applies to --task semantic_preference or story_word_category"),
            ("commands", ["--corpus", "timit"], "--corpus applies to --task semantic_preference or story_word_category"),
            ("semantic_preference", ["--folds", "4"], "--folds applies to --task story_word_category"),
            ("semantic_preference", ["--corpus", "aligned", "--stories", "souls"],
             "--stories chooses ds003020 stories; --corpus aligned reads every recording of its folder")):
        assert eval_downstream.main(probe_args(tiny_models["whisper"], downstream / "words", tmp_path / "x",
                                               tmp_path / "c", "--task", task, *flags)) == 2
        assert says in capsys.readouterr().err


def test_broken_and_empty_utterances_are_found_before_extraction(downstream, tiny_models, tmp_path, capsys,
                                                                 monkeypatch):
    import numpy as np
    import soundfile as sf

    import probes
    from conftest import link_tree
    wavs = sorted(p.name for p in (downstream / "crema_d" / "AudioWAV").iterdir())
    empty, short, pointer = wavs[0], wavs[1], wavs[2]
    root = link_tree(downstream / "crema_d", tmp_path / "crema_d",
                     without=tuple(f"AudioWAV/{w}" for w in (empty, short, pointer)))
    sf.write(root / "AudioWAV" / empty, np.zeros(0, np.float32), 16000)      # an empty recording
    sf.write(root / "AudioWAV" / short, np.zeros(1500, np.float32), 16000)   # 0.094 s: under the 0.1 s floor
    (root / "AudioWAV" / pointer).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    real = probes.utterance_features_together
    monkeypatch.setattr(probes, "utterance_features_together",
                        lambda *a, **k: pytest.fail("extraction began before every file was checked"))
    args = probe_args(tiny_models["wav2vec2"], root, tmp_path / "r", tmp_path / "c", "--task", "emotion", "--layers", "1")
    assert eval_downstream.main(args) == 3
    assert f"{pointer}: unreadable audio" in (err := capsys.readouterr().err) and "git lfs pull" in err
    assert not (tmp_path / "r").exists()
    sf.write(root / "AudioWAV" / pointer, np.zeros(3200, np.float32), 16000)  # fetched: 0.2 s, kept
    monkeypatch.setattr(probes, "utterance_features_together", real)
    assert eval_downstream.main(args) == 0  # before: a conv shape error from the model on the empty recording
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["skipped_utterances"] == {"shorter_than_s": 0.1,
                                         "files": [str(root / "AudioWAV" / w) for w in (empty, short)]}
    assert sum(res["utterances"].values()) == len(wavs) - 2
    assert "2 utterance(s) shorter than 0.1 s left out" in capsys.readouterr().err
    assert eval_downstream.main(args) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["feature_cache_hits"] == 3
    (root / "AudioWAV" / wavs[3]).unlink()  # the dataset changed on disk: its cached features no longer apply
    assert eval_downstream.main(args) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["feature_cache_hits"] == 0 and sum(res["utterances"].values()) == len(wavs) - 3
    # a recording replaced by another of the same length (a dataset rebuilt under the same names): not read back
    assert eval_downstream.main(args) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["feature_cache_hits"] == 3
    wav, rate = sf.read(str(root / "AudioWAV" / wavs[4]), dtype="float32")
    (root / "AudioWAV" / wavs[4]).unlink()  # a link into the shared fixture: replaced, not written through
    sf.write(root / "AudioWAV" / wavs[4], wav[::-1], rate)
    assert eval_downstream.main(args) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["feature_cache_hits"] == 0 and sum(res["utterances"].values()) == len(wavs) - 3


def test_utterance_audio_is_read_batch_by_batch(tiny_models):
    import numpy as np

    import models
    import probes
    events = []

    class Logged:  # a dataset split whose files are read when indexed
        def __len__(self):
            return 6

        def __getitem__(self, i):
            events.append("read")
            return np.full(800 + 400 * (i % 2), 0.01 * i, np.float32)
    enc = models.SpeechEncoder(*models.load_backbone(tiny_models["wav2vec2"]))
    real = probes.hidden_states_together

    def forward(*a, **k):
        events.append("forward")
        return real(*a, **k)
    probes.hidden_states_together = forward
    try:
        lazy = probes.utterance_features_together([enc], Logged(), [[1]], batch_size=2, progress=False,
                                                  lengths=[800 + 400 * (i % 2) for i in range(6)])[0]
    finally:
        probes.hidden_states_together = real
    # batches by equal length: (0, 2), (4,), (1, 3), (5,); never more than one batch of audio held
    assert events == ["read", "read", "forward", "read", "forward"] * 2
    eager = probes.utterance_features(enc, [Logged()[i] for i in range(6)], [1], batch_size=2, progress=False)
    np.testing.assert_array_equal(lazy, eager)


def test_probes_are_fitted_on_the_runs_device(mini, downstream, tiny_models, tmp_path, monkeypatch):
    # a GPU run fits its probes on that GPU (a full-size frame-level probe takes minutes per layer on a CPU):
    # every probe of every kind of task gets the --device the features were extracted on
    import torch
    import probe_cli
    import probes
    seen, fit = [], probes.fit_linear_probe
    monkeypatch.setattr(probe_cli, "resolve_device", lambda choice: torch.device("cpu", 0))
    monkeypatch.setattr(probes, "fit_linear_probe", lambda *a, device="cpu", **k: seen.append(device) or fit(*a, **k))
    _probe_utterance_task_and_story_words(mini, downstream, tiny_models, tmp_path, "--device", "cpu:0")
    assert len(seen) == 3 + 2 * 3  # probe and null of the utterance task; model and baseline, 3 folds each
    assert all(d == torch.device("cpu", 0) for d in seen)
    assert json.loads((tmp_path / "p" / "config.json").read_text())["args"]["device"] == "cpu:0"
    for out in ("p", "w"):  # how the probes were fitted is recorded with them
        fit_cfg = json.loads((tmp_path / out / "config.json").read_text())["probe_fit"]
        assert fit_cfg == {"weight_decays": list(probes.DEFAULT_WEIGHT_DECAYS), "max_epochs": 60, "eval_every": 5,
                           "lr": 0.01, "batch_size": 1024, "weight_decays_fitted": "one after another"}
    assert probes.fit_settings("cuda:1")["weight_decays_fitted"] == "side by side"


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_frame_rows_are_every_nth_frame_of_each_utterance(downstream, tiny_models, family):
    # written into arrays sized up front from the utterances' lengths: the same rows as each utterance's frames
    import numpy as np

    import downstream_data as dd
    import models
    import probe_tasks
    import probes
    backbone, extractor, model_type = models.load_backbone(tiny_models[family])
    encoder = models.SpeechEncoder(backbone, extractor, model_type, "truncate")
    members = [u for u in dd.read_timit(downstream / "timit") if u.split == "train"][:5]
    lengths = [dd.utterance_samples(u) for u in members]
    probed = probe_tasks.ProbedModel(encoder, family, [1, 2], downstream / "unused")
    ((rows, x),) = probe_tasks._frame_rows([probed], members, lengths, 3, "cpu", False, 1)
    times, states = zip(*(probes.frame_features(encoder, dd.load_utterance_audio(u), [1, 2]) for u in members))
    np.testing.assert_array_equal(x, np.concatenate([s[:, ::3] for s in states], axis=1))
    np.testing.assert_array_equal(rows[:, 1], np.concatenate([t[::3] for t in times]))
    np.testing.assert_array_equal(rows[:, 0], np.concatenate([np.full(len(t[::3]), i) for i, t in enumerate(times)]))


def test_whisper_pad30_frame_rows_batch_consecutive_utterances_with_the_numbers_of_each_alone(downstream, tiny_models,
                                                                                              monkeypatch):
    import numpy as np

    import downstream_data as dd
    import models
    import probe_tasks
    import probes
    backbone, extractor, model_type = models.load_backbone(tiny_models["whisper"])
    encoder = models.SpeechEncoder(backbone, extractor, model_type, "pad30")
    members = [u for u in dd.read_timit(downstream / "timit") if u.split == "train"][:5]
    lengths = [dd.utterance_samples(u) for u in members]
    assert len(set(lengths)) > 1
    probed = probe_tasks.ProbedModel(encoder, "whisper", [1, 2], downstream / "unused")
    alone = [probes.frame_features(encoder, dd.load_utterance_audio(u), [1, 2]) for u in members]
    batches = []
    real = probes.frame_features_batch
    monkeypatch.setattr(probes, "frame_features_batch", lambda e, wavs, *a: batches.append(len(wavs)) or real(e, wavs, *a))
    ((rows, x),) = probe_tasks._frame_rows([probed], members, lengths, 2, "cpu", False, 1, batch_size=2,
                                           mixed_lengths=True)
    assert batches == [2, 2, 1]  # consecutive utterances of different lengths, in their order
    np.testing.assert_allclose(x, np.concatenate([s[:, ::2] for _, s in alone], axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rows[:, 1], np.concatenate([t[::2] for t, _ in alone]))
    np.testing.assert_array_equal(rows[:, 0], np.concatenate([np.full(len(t[::2]), i) for i, (t, _) in enumerate(alone)]))
    truncate = models.SpeechEncoder(backbone, extractor, model_type, "truncate")
    with pytest.raises(ValueError, match="only models that pad every input to a fixed length"):
        probes.frame_features_batch([truncate], [dd.load_utterance_audio(u) for u in members[:2]], [[1]])


def test_probing_holds_one_models_features_at_a_time(downstream, tiny_models, tmp_path, monkeypatch):
    # several models in one run: each model's features are read from its cache just before its probes and
    # released after them (before, every model's splits stayed in memory until the last model was probed)
    import weakref

    import probe_tasks
    import probes
    alive, events = [], []
    load, fit = probe_tasks.load_task_features, probes.run_layer_probes

    def tracked_load(spec, utts, model, *a):
        events.append(("load", model.out.name, sum(r() is not None for r in alive)))
        feats, labels = load(spec, utts, model, *a)
        alive.extend(weakref.ref(x) for x in feats.values())
        return feats, labels

    def tracked_probes(features, *a, **k):
        events.append(("probe", sum(r() is not None for r in alive)))
        return fit(features, *a, **k)
    monkeypatch.setattr(probe_tasks, "load_task_features", tracked_load)
    monkeypatch.setattr(probes, "run_layer_probes", tracked_probes)
    outs = [str(tmp_path / k) for k in "abc"]
    args = ["--data-dir", str(downstream / "timit"), "--model-name", tiny_models["whisper"], tiny_models["wav2vec2"],
            tiny_models["hubert"], "--out", *outs, "--cache-dir", str(tmp_path / "c"), "--no-progress",
            "--task", "phonemes_frame", "--whisper-mode", "truncate"]
    assert eval_phonemes.main(args) == 0
    # train, val and test of one model in memory while it is probed, none of another's
    assert events == [("load", "a", 0), ("probe", 3), ("load", "b", 0), ("probe", 3), ("load", "c", 0), ("probe", 3)]


def test_uncovered_frames_are_dropped_in_the_features_own_buffer():
    from probe_tasks import keep_frames_in_place
    x = np.random.default_rng(0).standard_normal((3, 50, 4)).astype(np.float32)
    keep = np.random.default_rng(1).random(50) > 0.3
    want = x[:, keep].copy()
    got = keep_frames_in_place(x, keep)
    np.testing.assert_array_equal(got, want)
    assert np.shares_memory(got, x)  # no second copy of a split
    assert keep_frames_in_place(x, np.ones(50, bool)) is x


def test_compared_probe_folders_of_one_name_need_labels(tmp_path, capsys):
    result = {"task": "emotion", "model": "m", "layers": [1, 2], "upper_middle_layers": [2],
              "per_layer": {"1": {"f1_macro": 0.2}, "2": {"f1_macro": 0.3}}}
    seeds = []
    for k, f1 in enumerate((0.3, 0.4)):  # two seeds' tuned models, each folder named "tuned"
        folder = tmp_path / f"seed{k}" / "tuned"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({**result, "upper_middle_mean": {"f1_macro": f1}}))
        seeds.append(str(folder))
    assert eval_downstream.main(["--compare", *seeds, "--out", str(tmp_path / "c")]) == 2
    assert f"{seeds[0]} and {seeds[1]} are both named 'tuned'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert eval_downstream.main(["--compare", *seeds, "--labels", "s0", "s1", "--out", str(tmp_path / "c")]) == 0
    table = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert table["models"] == ["s0", "s1"] and table["change_vs_first_pct"]["s1"]["f1_macro"] == pytest.approx(100 / 3)
    assert table["upper_middle_layers"] == {"s0": [2], "s1": [2]}
    assert "Note: these upper-middle" not in (tmp_path / "c" / "comparison.md").read_text()
    # one evaluated at layer 1 only (its upper middle falls back to it): noted beside the table
    r1 = json.loads((Path(seeds[1]) / "results.json").read_text())
    (Path(seeds[1]) / "results.json").write_text(json.dumps({**r1, "layers": [1], "upper_middle_layers": [1],
                                                             "per_layer": {"1": {"f1_macro": 0.4}}}))
    assert eval_downstream.main(["--compare", *seeds, "--labels", "s0", "s1", "--out", str(tmp_path / "c1")]) == 0
    assert "Note: these upper-middle means average different layers (s0 [2]; s1 [1])" in \
        (tmp_path / "c1" / "comparison.md").read_text()
    assert eval_phonemes.main(["--labels", "a", "--out", str(tmp_path / "x"), "--model-name", "m"]) == 2
    assert "--labels names the models of --compare" in capsys.readouterr().err


def test_compare_refuses_whisper_probes_read_out_otherwise_but_not_other_families(tmp_path, capsys):
    result = {"task": "emotion", "model": "m", "model_type": "whisper", "whisper_mode": "pad30", "layers": [2],
              "upper_middle_layers": [2], "upper_middle_mean": {"f1_macro": 0.3}, "per_layer": {"2": {"f1_macro": 0.3}}}
    for name, r in (("pad30", result), ("truncate", {**result, "whisper_mode": "truncate"}),
                    ("hubert", {**result, "model_type": "hubert", "whisper_mode": None})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    assert eval_downstream.main(["--compare", str(tmp_path / "pad30"), str(tmp_path / "truncate"),
                                 "--out", str(tmp_path / "c")]) == 2
    assert (f"{tmp_path / 'truncate'}: --whisper-mode 'truncate', expected 'pad30' like {tmp_path / 'pad30'}: models "
            f"of one family (whisper)") in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert eval_downstream.main(["--compare", str(tmp_path / "pad30"), str(tmp_path / "hubert"),
                                 "--out", str(tmp_path / "c")]) == 0


def test_a_hub_id_probe_records_its_commit_and_caches_per_commit(downstream, tiny_models, tmp_path, monkeypatch):
    from conftest import hub_snapshot, point_hub_cache
    hub, repo = tmp_path / "hub", "toolkit-test/tiny-whisper"
    point_hub_cache(monkeypatch, hub)
    args = ("--task", "sentence_type", "--whisper-mode", "truncate", "--layers", "2")
    for commit in ("a" * 40, "b" * 40):  # the hub's main moves on (same weights): another cache entry
        hub_snapshot(hub, repo, tiny_models["whisper"], commit)
        assert eval_phonemes.main(probe_args(repo, downstream / "timit", tmp_path / commit[0], tmp_path / "c", *args)) == 0
        cfg = json.loads((tmp_path / commit[0] / "config.json").read_text())
        assert cfg["args"]["model_revision"] == commit
    assert cfg["feature_cache"] != json.loads((tmp_path / "a" / "config.json").read_text())["feature_cache"]
    # --revision pins the first commit after main moved on: its record and its cached features
    pinned = probe_args(repo, downstream / "timit", tmp_path / "pinned", tmp_path / "c", "--revision", "a" * 40, *args)
    assert eval_phonemes.main(pinned) == 0
    cfg = json.loads((tmp_path / "pinned" / "config.json").read_text())
    assert cfg["args"]["model_revision"] == "a" * 40 and cfg["args"]["revision"] == "a" * 40
    assert cfg["feature_cache"] == json.loads((tmp_path / "a" / "config.json").read_text())["feature_cache"]


def test_chance_level_is_the_training_majority_scored_on_the_test_split():
    from probe_tasks import chance_level
    # train mostly class 2, test mostly class 0: chance predicts 2 (known before the test), right on 1 of 4
    labels = {"train": np.array([2, 2, 2, 0, 1]), "test": np.array([0, 0, 0, 2])}
    assert chance_level(labels, "multiclass") == {"accuracy": 0.25, "n_classes_train": 3}
    # multilabel: per class, the training majority (on, off, off), scored per label of the test rows
    multi = {"train": np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32),
             "test": np.array([[0, 1, 1], [0, 1, 1]], np.float32)}
    assert chance_level(multi, "multilabel") == {"accuracy": 0.0}


def test_utterances_of_exactly_the_minimum_length_are_kept_and_inputs_of_exactly_30_s_taken(tmp_path):
    import types

    import soundfile as sf

    import downstream_data as dd
    import probe_tasks
    n_min = int(dd.MIN_UTTERANCE_S * dd.SAMPLE_RATE)  # 1600 samples
    utts = []
    for name, n in (("short", n_min - 1), ("exact", n_min), ("long", n_min + 1)):
        sf.write(tmp_path / f"{name}.wav", np.zeros(n, np.float32), dd.SAMPLE_RATE)
        utts.append(dd.Utterance(tmp_path / f"{name}.wav", "train", "a", "s1"))
    kept, lengths, left_out = probe_tasks.drop_short_utterances(utts, progress=False)
    assert [u.path.name for u in kept] == ["exact.wav", "long.wav"] and lengths == [n_min, n_min + 1]
    assert left_out == [str(tmp_path / "short.wav")]
    whisper = types.SimpleNamespace(name="whisper", encoder=types.SimpleNamespace(max_input_samples=480000))
    probe_tasks.check_input_lengths([whisper], utts[:1], [480000])  # exactly 30 s: taken
    with pytest.raises(probe_tasks.DataError, match=r"1 utterance\(s\) longer than the 30 s that whisper takes"):
        probe_tasks.check_input_lengths([whisper], utts[:1], [480001])


def test_each_layers_probe_key_names_its_layer():
    import probe_tasks
    same = np.zeros((2, 3, 4), np.float32)  # two layers with equal features (e.g. a frozen copy)
    feats = {s: same for s in ("train", "val", "test")}
    labels = {s: np.zeros(3, np.int64) for s in ("train", "val", "test")}
    keys = probe_tasks.layer_probe_keys("task", feats, labels, None, [3, 4], {"kind": "multiclass"})
    assert keys[3] != keys[4]  # a result read back is the layer's own, not another layer's with equal features


def test_frames_no_segment_covers_are_left_out_of_features_and_labels():
    # TIMIT's folded-away glottal stop and gaps between words leave frames without a label (-1): a probe must
    # neither fit nor score them, and each kept frame keeps its own features
    import downstream_data as dd
    import probe_tasks
    times = np.array([0.05, 0.15, 0.25, 0.35])
    segments = [(0.0, 0.1, "a"), (0.2, 0.3, "b")]  # frames at 0.15 s and 0.35 s fall in no segment
    utts = [dd.Utterance(Path(f"{s}{i}.wav"), s, None, "spk", segments) for s in dd.SPLITS for i in range(2)]

    rows = np.stack([np.repeat([0.0, 1.0], 4), np.tile(times, 2)], axis=1)  # (utterance, time) per frame
    full = np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)  # (layers, frames, hidden)

    class Cache:
        def load(self, split, layers, count_hit=True):
            return rows, full.copy()  # a fresh array per split: the frames are dropped in its own buffer

    spec = probe_tasks.TaskSpec(reader=None, kind="multiclass", level="frame", label="frame_phone", description="")
    model = probe_tasks.ProbedModel(None, "m", [1, 2], Path("unused"))
    feats, labels = probe_tasks.load_task_features(spec, utts, model, Cache(), None, {"a": 0, "b": 1}, set())
    for split in dd.SPLITS:
        np.testing.assert_array_equal(labels[split], [0, 1, 0, 1])
        np.testing.assert_array_equal(feats[split], full[:, [0, 2, 4, 6]])


def test_the_permutation_floor_is_said_only_where_it_is_above_0_01():
    per_layer = {"2": {"test": {"f1_macro": 0.5, "f1_micro": 0.5, "accuracy": 0.5}, "weight_decay": 0.0, "epochs": 5,
                       "permutation_null": None}}
    result = {"task": "t", "model": "m", "per_layer": per_layer, "upper_middle_layers": [2],
              "upper_middle_mean": {"f1_macro": 0.5, "f1_micro": 0.5, "accuracy": 0.5}, "chance": {"accuracy": 0.1},
              "n_rows": {"train": 8, "val": 2, "test": 2}, "permutation_unit": "word"}
    for n, said in ((19, "With 19 permutations p cannot go below 0.05"), (99, None)):
        per_layer["2"]["permutation_null"] = {"n": n, "mean": 0.1, "sd": 0.05, "range95": [0.0, 0.2],
                                              "p_above": 1 / (n + 1)}
        table = probe_tasks.render_probe_table(result)
        assert (said in table) if said else ("cannot go below" not in table)
