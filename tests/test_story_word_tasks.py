"""eval_downstream.py's word-segment tasks end to end on the miniature's stories and an aligned folder:
semantic preference (synonym vs near-homophone pairs) and the held-out-word category probe."""
import json
import re
import shutil

import pytest

import eval_downstream
from data_utils import DataError
from conftest import killed_at_fit, probe_args


def test_semantic_preference_on_miniature_stories(mini, downstream, tiny_models, tmp_path, capsys):
    out = tmp_path / "sp"
    assert eval_downstream.main(probe_args(tiny_models["hubert"], mini / "ds003020", out, tmp_path / "c",
                                      "--task", "semantic_preference", "--pairs",
                                      str(downstream / "words" / "semantic_pairs.tsv"), "--max-per-word", "2")) == 0
    res = json.loads((out / "results.json").read_text())
    assert (f"semantic_preference · {tiny_models['hubert']}: upper-middle layers {res['upper_middle_layers']}: "
            f"preference {res['upper_middle_mean']['preference']:+.3f}") in capsys.readouterr().out
    assert res["n_pairs"]["near_homophone"] >= 5 and res["n_pairs"]["synonym"] >= 10
    v = res["per_layer"]["1"]
    assert v["preference"] == pytest.approx(v["synonym"] - v["near_homophone"])
    assert (res["context_s"], res["max_per_word"]) == (3.0, 2)
    # word segments cut with another --context are other features: --compare refuses to table them side by side
    assert eval_downstream.main(probe_args(tiny_models["hubert"], mini / "ds003020", tmp_path / "sp1", tmp_path / "c",
                                      "--task", "semantic_preference", "--pairs",
                                      str(downstream / "words" / "semantic_pairs.tsv"), "--max-per-word", "2",
                                      "--context", "1")) == 0
    capsys.readouterr()
    assert eval_downstream.main(["--compare", str(out), str(tmp_path / "sp1"), "--out", str(tmp_path / "cmp")]) == 2
    assert f"{tmp_path / 'sp1'}: --context 1.0, expected 3.0 like {out}" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_story_words_from_a_truncated_story_or_a_broken_textgrid_exit_3_naming_the_file(mini, downstream, tiny_models,
                                                                                         tmp_path, capsys):
    import soundfile as sf
    from conftest import link_tree
    wav, grid = "stimuli/souls.wav", "derivative/TextGrids/avatar.TextGrid"
    root = link_tree(mini / "ds003020", tmp_path / "ds003020", without=(wav, grid))
    audio, rate = sf.read(mini / "ds003020" / wav)
    sf.write(root / wav, audio[:len(audio) // 3], rate)
    (root / grid).write_text((mini / "ds003020" / grid).read_text()[:1500])
    pairs = ["--task", "semantic_preference", "--pairs", str(downstream / "words" / "semantic_pairs.tsv")]
    assert eval_downstream.main(probe_args(tiny_models["wav2vec2"], root, tmp_path / "sp", tmp_path / "c", *pairs)) == 3
    assert f"{root / grid}: cannot parse TextGrid" in capsys.readouterr().err  # avatar comes first
    (root / grid).unlink()
    (root / grid).symlink_to(mini / "ds003020" / grid)
    assert eval_downstream.main(probe_args(tiny_models["wav2vec2"], root, tmp_path / "sp", tmp_path / "c", *pairs)) == 3
    assert f"{root / wav}: audio lasts" in capsys.readouterr().err
    assert not (tmp_path / "sp").exists() and not (tmp_path / "c").exists()  # named before any extraction
    # pairs whose words the stories never say (the default English list on the miniature): named, not extracted
    english = ["--task", "semantic_preference", "--stories", "souls"]
    assert eval_downstream.main(probe_args(tiny_models["wav2vec2"], mini / "ds003020", tmp_path / "sp", tmp_path / "c",
                                      *english)) == 3
    err = capsys.readouterr().err
    assert "semantic_pairs_en.tsv: no synonym or near_homophone pair has both words in the corpus's word alignments " \
           "(1 recording); 113 of its 115 words never occur, e.g. ['angry', " in err, err
    assert not (tmp_path / "sp").exists() and not (tmp_path / "c").exists()


def test_story_word_category_probe_on_miniature_stories(mini, tiny_models, tmp_path, capsys):
    labels = mini / "ground_truth" / "word_categories.tsv"
    out = tmp_path / "swc"
    args = probe_args(tiny_models["whisper"], mini / "ds003020", out, tmp_path / "c", "--task", "story_word_category",
                 "--word-labels", str(labels), "--whisper-mode", "truncate", "--max-per-word", "2", "--folds", "4")
    assert eval_downstream.main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_folds"] == 4 and res["max_per_word"] == 2 and len(res["classes"]) == 8
    assert (res["model_type"], res["whisper_mode"]) == ("whisper", "truncate")  # for --compare's check
    assert res["n_words"] >= 40 and res["n_words"] <= res["n_occurrences"] <= 2 * res["n_words"]
    for layer in ("1", "2"):
        v = res["per_layer"][layer]
        assert len(v["folds"]) == 4 and v["test"]["f1_macro"] == pytest.approx(sum(v["folds"]) / 4)
    assert res["chance"]["f1_macro_uniform_guess"] == pytest.approx(1 / 8)
    assert (out / "story_word_category_by_layer.png").is_file() and "held-out words" in (out / "table.md").read_text()
    # the model-free baseline on the labels of the preceding words, same folds: stories hold several words per 3 s
    base = res["context_label_baseline"]
    assert base["mean_context_words"] > 0.5 and 0 <= base["test"]["f1_macro"] <= 1
    assert "| context-label baseline |" in (out / "table.md").read_text()
    # usage and data errors
    assert eval_downstream.main([a for a in args if a not in ("--word-labels", str(labels))]) == 2
    bad = tmp_path / "bad.tsv"
    bad.write_text("word\tcategory\nbear\tanimal\n")
    assert eval_downstream.main(args[:args.index("--word-labels") + 1] + [str(bad)] +
                                args[args.index("--word-labels") + 2:]) == 3
    err = capsys.readouterr().err
    assert str(bad) in err and "'word<TAB>label'" in err and "category" in err  # file, expected, found
    animals = [w for w, c in (line.split("\t") for line in labels.read_text().splitlines()[1:]) if c == "animal"]
    bad.write_text("word\tlabel\n" + "".join(f"{w}\tanimal\n" for w in animals))  # one label: nothing to tell apart
    assert eval_downstream.main(args[:args.index("--word-labels") + 1] + [str(bad)] +
                                args[args.index("--word-labels") + 2:]) == 3
    assert re.search(rf"{re.escape(str(bad))}: only \d+ labelled words \(1 labels\) occur in the stories; need ≥ 2 "
                     rf"labels and ≥ 4 words", capsys.readouterr().err)


def test_word_lists_are_read_before_any_model_loads(mini, tmp_path, capsys):
    (tmp_path / "pairs.tsv").write_text("word1\tword2\nbear\tbare\n")  # a column short in its header
    for task, flag, path, message in (
            ("story_word_category", "--word-labels", tmp_path / "labels.tsv", "labels.tsv: file missing"),
            ("semantic_preference", "--pairs", tmp_path / "pairs.tsv", "pairs.tsv: expected header "
                                                                        "'word1<TAB>word2<TAB>relation'")):
        # a model folder that is not there: the list's error comes first (it was found after the models loaded)
        assert eval_downstream.main(probe_args(str(tmp_path / "no_model"), mini / "ds003020", tmp_path / "o",
                                               tmp_path / "c", "--task", task, flag, str(path))) == 3
        assert message in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert eval_downstream.main(probe_args(str(tmp_path / "no_model"), mini / "ds003020", tmp_path / "o", tmp_path / "c",
                                           "--task", "semantic_preference", "--stories", "avtar", "souls")) == 3
    assert "'avtar': did you mean 'avatar'?" in capsys.readouterr().err  # was "no entry for story", models loaded


def test_word_labels_name_the_bad_line(tmp_path):
    from probe_tasks import read_word_labels
    path = tmp_path / "w.tsv"
    path.write_text("word\tlabel\nBear\tanimal\nbear\tanimal\nsoup\tfood\n")
    assert read_word_labels(path) == {"bear": "animal", "soup": "food"}  # case-folded; the same label again is fine
    for rows, message in [("bear\t\n", r"line 2: expected word<TAB>label, found \['bear', ''\]"),
                          ("bear\tanimal\tbig\n", r"line 2: expected word<TAB>label, found \['bear', 'animal', 'big'\]"),
                          ("bear\tanimal\nBEAR\tfood\n", r"line 3: word 'BEAR' labelled twice \('animal', 'food'\)")]:
        path.write_text("word\tlabel\n" + rows)
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, {message}$"):
            read_word_labels(path)


def test_a_killed_story_word_probe_resumes_from_its_finished_layers(mini, tiny_models, tmp_path, monkeypatch, capsys):
    def args(out, *extra):
        return probe_args(tiny_models["whisper"], mini / "ds003020", out, tmp_path / "c", "--task", "story_word_category",
                     "--word-labels", str(mini / "ground_truth" / "word_categories.tsv"), "--whisper-mode", "truncate",
                     "--max-per-word", "1", "--folds", "3", *extra)
    assert eval_downstream.main(args(tmp_path / "whole")) == 0
    # killed at the baseline's 3 folds, layer 1's 3, then layer 2's first
    calls = killed_at_fit(monkeypatch, 3 + 3 + 1, lambda: eval_downstream.main(args(tmp_path / "k")), tmp_path / "k")
    capsys.readouterr()
    assert eval_downstream.main(args(tmp_path / "k")) == 0
    assert len(calls) == 3 + 3  # the baseline (no model, cheap) and layer 2's folds
    assert "layer(s) [1] read back from an earlier run with the same inputs" in capsys.readouterr().err
    assert json.loads((tmp_path / "k" / "config.json").read_text())["layers_reused"] == [1]
    whole, resumed = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "k"))
    assert resumed["per_layer"] == whole["per_layer"] and resumed["upper_middle_mean"] == whole["upper_middle_mean"]
    calls[:] = []  # other folds: every layer fitted again
    assert eval_downstream.main(args(tmp_path / "k", "--folds", "4")) == 0  # the last --folds counts
    assert len(calls) == 4 + 2 * 4 and json.loads((tmp_path / "k" / "config.json").read_text())["layers_reused"] == []


def test_semantic_preference_on_timit_word_alignments(downstream, tiny_models, tmp_path):
    # TIMIT's SA sentences, said by every speaker: "... greasy wash water all year", "... carry an oily rag ..."
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("word1\tword2\trelation\ngreasy\toily\tsynonym\nyear\tyour\tnear_homophone\n"
                     "water\tnowhere\tnear_homophone\n")
    out = tmp_path / "sp"
    assert eval_downstream.main(probe_args(tiny_models["hubert"], downstream / "timit", out, tmp_path / "c", "--task",
                                      "semantic_preference", "--corpus", "timit", "--pairs", str(pairs),
                                      "--max-per-word", "2")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_pairs"] == {"synonym": 1, "near_homophone": 1} and res["words_found"] == 5  # water too
    assert res["skipped_pairs"] == 1  # "nowhere" is said by no one
    v = res["per_layer"]["2"]
    assert v["preference"] == pytest.approx(v["synonym"] - v["near_homophone"]) and -1 <= v["synonym"] <= 1


def test_story_word_category_on_an_aligned_folder(downstream, tiny_models, tmp_path, capsys):
    carriers = downstream / "words_in_carriers"
    out = tmp_path / "carriers"
    assert eval_downstream.main(probe_args(tiny_models["whisper"], carriers, out, tmp_path / "c", "--task",
                                      "story_word_category", "--corpus", "aligned", "--word-labels",
                                      str(carriers / "word_categories.tsv"), "--whisper-mode", "truncate")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_words"] == 96 and res["n_occurrences"] == 2 * 96  # every word once in each of the two sentences
    # neutral sentences: no labelled word precedes the target, so the baseline has nothing to go on
    assert res["context_label_baseline"]["mean_context_words"] == 0
    assert res["context_label_baseline"]["test"]["accuracy"] == pytest.approx(1 / 8)
    assert res["corpus"] == "aligned"  # recorded: --compare refuses the same task on another corpus
    other = tmp_path / "stories"
    shutil.copytree(out, other)
    (other / "results.json").write_text(json.dumps({**res, "corpus": "ds003020"}))
    assert eval_downstream.main(["--compare", str(other), str(out), "--out", str(tmp_path / "cmp")]) == 2
    assert f"{out}: --corpus 'aligned', expected 'ds003020' like {other}" in capsys.readouterr().err


def test_word_tasks_default_occurrences_per_word(monkeypatch):
    seen = []
    monkeypatch.setattr(eval_downstream, "run", lambda args, task, read_inputs: seen.append(args.max_per_word) or 0)
    for task, extra in (("story_word_category", ["--word-labels", "w.tsv"]), ("semantic_preference", []),
                        ("semantic_preference", ["--max-per-word", "3"])):
        assert eval_downstream.main(["--task", task, "--data-dir", "d", "--model-name", "m", "--out", "o", *extra]) == 0
    assert seen == [5, 10, 3]
