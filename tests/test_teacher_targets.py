"""Teacher targets (teacher_targets.py, make_teacher_targets.py) and the trainer regressing onto them."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import brain_evaluate
import brain_trainer_story as trainer
import data_utils as du
import make_teacher_targets as mtt
import teacher_targets as tt
from eval_utils import zscore
from conftest import link_tree
from make_demo_data import CATEGORY_NAMES, VOCABULARY
from timing import trim_slice


def _write_embedding(path, vocab, data):
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["vocab"] = np.array([w.encode() for w in vocab])


def test_read_word_embedding_transposes_lowercases_and_keeps_the_first_of_a_repeated_word(tmp_path):
    data = np.arange(12, dtype=np.float64).reshape(3, 4)  # (dims 3, words 4), as english1000sm.hf5 stores it
    _write_embedding(tmp_path / "e.hf5", ["Bear", "pear", "bear", "x"], data)
    index, emb = tt.read_word_embedding(tmp_path / "e.hf5")
    assert index == {"bear": 0, "pear": 1, "x": 3}
    assert emb.shape == (4, 3) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[1], [1, 5, 9])
    vecs, n_known = tt.word_vectors(["BEAR", "the", "x"], index, emb)
    np.testing.assert_array_equal(vecs, [[0, 4, 8], [0, 0, 0], [3, 7, 11]])
    assert n_known == 2


def test_read_word_embedding_names_the_file_and_what_it_found(tmp_path):
    _write_embedding(tmp_path / "wrong.hf5", ["a", "b", "c"], np.zeros((985, 4)))
    with pytest.raises(du.DataError, match=r"wrong.hf5: expected 'data' of shape \(dims, 3\) for the 3 words of "
                                           r"'vocab', found 'data' \(985, 4\) and 'vocab' \(3,\)"):
        tt.read_word_embedding(tmp_path / "wrong.hf5")
    with h5py.File(tmp_path / "nokey.hf5", "w") as f:
        f["data"] = np.zeros((2, 2))
    with pytest.raises(du.DataError, match=r"nokey.hf5: expected keys 'data' .* found keys \['data'\]"):
        tt.read_word_embedding(tmp_path / "nokey.hf5")
    with pytest.raises(du.DataError, match="absent.hf5: word embedding file missing"):
        tt.read_word_embedding(tmp_path / "absent.hf5")
    (tmp_path / "em_data").mkdir()
    with pytest.raises(du.DataError, match="em_data: a folder, expected the word embedding file; it holds no file"):
        tt.read_word_embedding(tmp_path / "em_data")
    (tmp_path / "text.hf5").write_text("not hdf5")
    with pytest.raises(du.DataError, match="text.hf5: not a readable HDF5 file"):
        tt.read_word_embedding(tmp_path / "text.hf5")


@pytest.fixture(scope="module")
def category_embedding(tmp_path_factory):
    """A word-embedding file in the english1000 layout whose vectors are the miniature words' categories."""
    vocab = sorted(VOCABULARY)
    onehot = np.zeros((len(CATEGORY_NAMES), len(vocab)))
    for j, w in enumerate(vocab):
        onehot[CATEGORY_NAMES.index(VOCABULARY[w]), j] = 1.0
    path = tmp_path_factory.mktemp("teacher") / "categories.hf5"
    _write_embedding(path, vocab, onehot)
    return path


def test_word_teacher_equals_the_miniatures_semantic_truth_and_the_trainer_tunes_on_it(
        mini, category_embedding, tiny_models, tmp_path, monkeypatch, capsys):
    out = tmp_path / "categories.npz"
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--word-embedding", str(category_embedding), "--out",
                     str(out), "--no-progress"]) == 0
    data = du.Ds003020(mini / "ds003020")
    present = [s for s in mtt.BRAIN_TUNING_STORIES if s in data.respdict]
    assert "lacks" in capsys.readouterr().err  # the tiny miniature has a few of the 27 stories
    truth = np.load(mini / "ground_truth" / "features.npz")
    with np.load(out) as z:
        assert sorted(z.files) == sorted(present)
        for story in present:
            # the generator's own category indicators (its words, before they were written to the TextGrid)
            expected = zscore(truth[f"{story}/semantic"][trim_slice(data.tr_grid(story).n_tr)])
            assert z[story].shape == (data.respdict[story] - 20, len(CATEGORY_NAMES))
            np.testing.assert_allclose(z[story], expected, atol=1e-4)  # TextGrid times: ~1e-5
    record = json.loads(out.with_name("categories.npz.json").read_text())
    assert record["resolved"]["teacher"]["kind"] == "word_embedding"
    words = record["resolved"]["stories"][present[0]]
    assert 0 < words["in_vocabulary"] < words["words"]  # function words are outside the vocabulary
    assert all(record["resolved"]["stories"][s]["rows"] == data.respdict[s] - 20 for s in present)
    assert record["versions"]["numpy"] == np.__version__

    # the trainer regresses onto them, reading no voxel of the responses (only their row counts)
    def no_voxels(*a, **k):
        raise AssertionError("the trainer read responses it does not regress onto")
    monkeypatch.setattr(du.Ds003020, "load_responses", no_voxels)
    assert trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                         tiny_models["wav2vec2"], "--nc-dir", str(mini / "subject_NCs"), "--out-dir", str(tmp_path / "t"),
                         "--batch-size", "16", "--num-epochs", "1", "--no-progress", "--targets-from", str(out)]) == 0
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["args"]["resolved"]["n_targets"] == len(CATEGORY_NAMES)
    provenance = cfg["args"]["resolved"]["voxels"]  # the teacher's record travels with the tuned run
    assert provenance["teacher"] == record["resolved"]["teacher"] and provenance["teacher_command"] == record["command"]
    # targets placed on another TR's grids are refused (same rows, drifting times)
    assert trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                         tiny_models["wav2vec2"], "--out-dir", str(tmp_path / "tr"), "--tr", "2.0", "--no-progress",
                         "--targets-from", str(out)]) == trainer.EXIT_DATA
    assert ("categories.npz: made on TR grids of --tr 2.0045 s (its categories.npz.json), but this run uses --tr 2.0 s"
            in capsys.readouterr().err)
    # a record damaged later cannot be checked: named, exit 3 (it was recorded as unreadable and the run went on)
    sidecar = out.with_name("categories.npz.json")
    for damaged, says in (("{", f"{sidecar}: not valid JSON"),
                          (json.dumps({**record, "resolved": 5}), f"{sidecar}: expected 'resolved' to be the JSON object")):
        sidecar.write_text(damaged)
        assert trainer.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name",
                             tiny_models["wav2vec2"], "--out-dir", str(tmp_path / "bad"), "--no-progress",
                             "--targets-from", str(out)]) == trainer.EXIT_DATA
        assert says in capsys.readouterr().err
        assert not (tmp_path / "bad" / "best").exists()


def test_speech_teacher_reads_the_evaluations_feature_cache(mini, tiny_models, tmp_path):
    model, cache = tiny_models["hubert"], tmp_path / "cache"
    settings = ["--stride", "0.5", "--context", "3", "--no-progress", "--cache-dir", str(cache)]
    assert brain_evaluate.main(["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", model,
                                "--out", str(tmp_path / "eval"), "--nc-dir", str(mini / "subject_NCs"),
                                "--layers", "1", "2", *settings]) == 0
    evaluated = json.loads((tmp_path / "eval" / "config.json").read_text())["resolved"]
    stories = ["souls", "stagefright"]
    out = tmp_path / "teacher.npz"
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--model-name", model, "--layer", "2", "--out", str(out),
                     "--stories", *stories, *settings]) == 0
    teacher = json.loads((tmp_path / "teacher.npz.json").read_text())["resolved"]["teacher"]
    # same cache folder, every story found there: the teacher's features are the evaluation's
    assert teacher["feature_cache"] == evaluated["feature_cache"] and teacher["feature_cache_hits"] == len(stories)
    assert teacher["model_revision"] is None  # a local folder (a hub id: its cached commit, models.hub_revision)
    assert teacher["batch_size"] == 1 and teacher["device"] == "cpu"  # one window at a time on a CPU, as evaluated
    data = du.Ds003020(mini / "ds003020")
    with np.load(out) as z:
        assert sorted(z.files) == stories
        for story in stories:
            t = z[story]
            assert t.shape == (data.respdict[story] - 20, 64)  # hidden size of the tiny models
            np.testing.assert_allclose(t.mean(0), 0, atol=1e-4)
            np.testing.assert_allclose(t.std(0), 1, atol=1e-3)
    # a fresh cache extracts the same numbers
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--model-name", model, "--layer", "2", "--out",
                     str(tmp_path / "fresh.npz"), "--stories", *stories, *settings[:-1], str(tmp_path / "c2")]) == 0
    assert json.loads((tmp_path / "fresh.npz.json").read_text())["resolved"]["teacher"]["feature_cache_hits"] == 0
    with np.load(out) as a, np.load(tmp_path / "fresh.npz") as b:
        for story in stories:
            np.testing.assert_allclose(a[story], b[story], atol=1e-5)


def test_usage_and_data_errors(mini, tiny_models, tmp_path, capsys):
    root = str(mini / "ds003020")
    assert mtt.main(["--data-dir", root, "--model-name", tiny_models["hubert"], "--out", str(tmp_path / "t.npz")]) == 2
    assert "--model-name needs --layer" in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--out", str(tmp_path / "t.txt")]) == 2
    assert "--out must name a .npz file, found" in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--model-name", tiny_models["hubert"], "--layer", "3",
                     "--out", str(tmp_path / "t.npz")]) == 2
    assert "--layer 3 out of range: " in (err := capsys.readouterr().err) and "has hidden states 0..2" in err
    assert mtt.main(["--data-dir", root, "--model-name", tiny_models["hubert"], "--layer", "1", "--stride", "13",
                     "--out", str(tmp_path / "t.npz")]) == 2  # some TRs' features would be zeros
    assert "--stride 13 s leaves TRs with no feature window" in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--word-embedding", str(tmp_path / "e.hf5"), "--out", str(tmp_path / "t.npz")]) == 3
    assert "e.hf5: word embedding file missing" in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--stories", "stagefrite",
                     "--out", str(tmp_path / "t.npz")]) == 3
    assert "--stories names ['stagefrite'], not stories of this dataset" in (err := capsys.readouterr().err)
    assert "'stagefrite': did you mean 'stagefright'?" in err
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--cache-dir", str(tmp_path),
                     "--out", str(tmp_path / "t.npz")]) == 2
    assert "--cache-dir applies to a speech teacher (--model-name)" in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--batch-size", "8",
                     "--out", str(tmp_path / "t.npz")]) == 2
    assert "--batch-size applies to a model teacher" in capsys.readouterr().err
    # flags whose defaults are values, given for a teacher that does not read them: refused, not ignored
    for teacher, flags, message in (
            (["--word-embedding", "english1000"], ["--stride", "0.5", "--pooling", "mean"],
             "--stride, --pooling apply to a speech teacher (--model-name)"),
            (["--word-embedding", "english1000"], ["--device", "cpu"], "--device applies to a model teacher"),
            (["--word-embedding", "english1000"], ["--context-words", "3"], "--context-words applies to a text teacher"),
            (["--text-model", str(tmp_path / "lm"), "--layer", "1"], ["--whisper-mode", "truncate"],
             "--whisper-mode applies to a speech teacher"),
            (["--model-name", tiny_models["hubert"], "--layer", "1"], ["--context-words", "5"],
             "--context-words applies to a text teacher (--text-model)")):
        assert mtt.main(["--data-dir", root, *teacher, *flags, "--out", str(tmp_path / "t.npz")]) == 2
        assert message in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--context-words", "20", "--stride", "0.1",
                     "--out", str(tmp_path / "same.npz"), "--no-progress"]) == 0  # the defaults given: nothing ignored
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--layer", "1",
                     "--out", str(tmp_path / "t.npz")]) == 2
    assert "--layer chooses a model teacher's layer; --word-embedding has none" in capsys.readouterr().err
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--revision", "v1",
                     "--out", str(tmp_path / "t.npz")]) == 2
    assert "--revision chooses a model teacher's hub revision; --word-embedding reads a file" in capsys.readouterr().err
    assert not (tmp_path / "t.npz").exists()
    np.savez(tmp_path / "mine.npz", x=np.arange(3))  # someone else's file under the name given as --out
    assert mtt.main(["--data-dir", root, "--word-embedding", "english1000", "--out", str(tmp_path / "mine.npz")]) == 2
    assert "mine.npz exists and has no mine.npz.json beside it" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "mine.npz")["x"], np.arange(3))


def test_a_full_disk_keeps_the_earlier_targets_beside_their_own_record(mini, tmp_path, capsys, monkeypatch):
    import atomic_io
    argv = ["--data-dir", str(mini / "ds003020"), "--word-embedding", "english1000", "--no-progress",
            "--out", str(tmp_path / "t.npz")]
    assert mtt.main(argv + ["--stories", "life"]) == 0
    earlier = (tmp_path / "t.npz").read_bytes(), (tmp_path / "t.npz.json").read_bytes()

    def full(f, **arrays):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic_io.np, "savez", full)  # the .npz cannot be written: the earlier pair stays
    assert mtt.main(argv) == 6
    assert f"error: {tmp_path / 't.npz'}: could not be written (OSError: [Errno 28]" in capsys.readouterr().err
    assert ((tmp_path / "t.npz").read_bytes(), (tmp_path / "t.npz.json").read_bytes()) == earlier
    monkeypatch.undo()

    def record_fails(path, obj):  # the new .npz is written, its record is not: it must not replace the earlier one
        with atomic_io.writing(path):
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(mtt, "write_json_atomic", record_fails)
    assert mtt.main(argv) == 6
    assert f"error: {tmp_path / 't.npz.json'}: could not be written (OSError: [Errno 28]" in capsys.readouterr().err
    assert ((tmp_path / "t.npz").read_bytes(), (tmp_path / "t.npz.json").read_bytes()) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz", "t.npz.json"]  # no temporary file left
    monkeypatch.undo()

    def pressed(*args):  # Ctrl-C mid-extraction: a line and exit 130, not a traceback; the earlier pair stays
        raise KeyboardInterrupt
    monkeypatch.setattr(mtt, "word_embedding_teacher", pressed)
    assert mtt.main(argv) == 130
    assert "error: interrupted (Ctrl-C); what was written before is whole" in capsys.readouterr().err
    assert ((tmp_path / "t.npz").read_bytes(), (tmp_path / "t.npz.json").read_bytes()) == earlier


def test_english1000_missing_from_the_dataset_says_where_the_file_is_kept(mini, tmp_path, capsys):
    import shutil
    root = tmp_path / "ds003020"  # the miniature without its english1000sm.hf5, as ds003020 may come
    shutil.copytree(mini / "ds003020" / "derivative", root / "derivative",
                    ignore=shutil.ignore_patterns("english1000sm.hf5"))
    (root / "stimuli").symlink_to(mini / "ds003020" / "stimuli")
    assert mtt.main(["--data-dir", str(root), "--word-embedding", "english1000", "--out", str(tmp_path / "t.npz"),
                     "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "derivative/english1000sm.hf5: word embedding file missing" in err
    assert "deep-fMRI-dataset repository keeps it as em_data/english1000sm.hf5" in err
    assert not (tmp_path / "t.npz").exists()


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A tiny random GPT-2 with a word-level tokenizer (offline), over a few words and the miniature's vocabulary."""
    from model_zoo import build_random_text_model
    words = "the bear was next to pear i remember a and".split() + sorted(VOCABULARY)
    folder = build_random_text_model(words, tmp_path_factory.mktemp("lm") / "gpt2-tiny")
    return tt.load_text_model(str(folder))


def test_a_speech_model_or_a_file_given_as_text_model_is_named_before_its_tokenizer_is_read(tiny_models, mini_root,
                                                                                           tmp_path, capsys):
    from models import ModelError
    with pytest.raises(ModelError, match=r"wav2vec2' is a wav2vec2 speech model, not a text model: a speech teacher "
                                         r"is given as --model-name"):
        tt.load_text_model(tiny_models["wav2vec2"])  # its tokenizer was a TypeError traceback (no vocabulary file)
    with pytest.raises(ModelError, match=r"config.json': a file, not a model folder"):
        tt.load_text_model(str(Path(tiny_models["whisper"]) / "config.json"))
    assert mtt.main(["--data-dir", str(mini_root), "--text-model", tiny_models["hubert"], "--layer", "1", "--out",
                     str(tmp_path / "t.npz")]) == mtt.EXIT_USAGE
    assert "is a hubert speech model, not a text model" in capsys.readouterr().err
    assert not (tmp_path / "t.npz").exists()


def _direct(tokenizer, model, text, layer):
    import torch
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1].numpy()


def test_text_teacher_reads_each_word_with_the_words_before_it(text_model):
    tokenizer, model = text_model
    labels = ["the", "{SL}", "bear", "was", "", "next", "to", "the", "pear"]
    vecs = tt.text_model_word_vectors(labels, tokenizer, model, layer=2, context_words=2, batch_size=3)
    assert vecs.shape == (9, 32)
    np.testing.assert_array_equal(vecs[[1, 4]], 0)  # non-lexical labels
    contexts = {0: "the", 2: "the bear", 3: "the bear was", 5: "bear was next", 6: "was next to", 7: "next to the",
                8: "to the pear"}
    for i, text in contexts.items():  # batched, padded and sorted by length, each as if run alone
        np.testing.assert_allclose(vecs[i], _direct(tokenizer, model, text, 2), atol=1e-5)
    assert not np.allclose(vecs[0], vecs[7])  # the same word in another context
    later = tt.text_model_word_vectors(labels[:-1] + ["bear"], tokenizer, model, 2, 2, 3)
    np.testing.assert_allclose(later[:8], vecs[:8], atol=1e-6)  # a word never changes the words before it
    shouted = tt.text_model_word_vectors([w.upper() for w in labels], tokenizer, model, 2, 2, 3)
    np.testing.assert_array_equal(shouted, vecs)  # read in lower case, as the Huth-lab word sequences hold words
    with pytest.raises(tt.ModelError, match="a context of 200 words is 129 tokens, more than the model's 128 positions"):
        tt.text_model_word_vectors(["the"] * 129, tokenizer, model, 1, context_words=200)
    assert tt.text_model_word_vectors(["the"] * 128, tokenizer, model, 1, context_words=200).shape == (128, 32)  # fits


def test_only_whole_braced_annotations_and_empty_labels_are_not_read_as_words():
    # {SL}, {CG}, {IG} annotate the recording; a label with a stray brace is still text the aligner heard
    labels = ["the", " {SL} ", "{CG}", "", "  ", "don't", "{unclosed", "closed}"]
    assert [tt.is_lexical(w) for w in labels] == [True, False, False, False, False, True, True, True]


def test_text_teacher_end_to_end(mini, text_model, tmp_path, capsys):
    folder = text_model[0].name_or_path  # the fixture's model folder
    out = tmp_path / "lm.npz"
    stories = ["souls", "wheretheressmoke"]
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--text-model", folder, "--layer", "1", "--context-words",
                     "5", "--stories", *stories, "--out", str(out), "--no-progress"]) == 0
    data = du.Ds003020(mini / "ds003020")
    record = json.loads((tmp_path / "lm.npz.json").read_text())["resolved"]
    assert record["teacher"]["kind"] == "text_model" and record["teacher"]["context_words"] == 5
    assert record["teacher"]["model_revision"] is None and record["teacher"]["batch_size"] == 32
    with np.load(out) as z:
        for story in stories:
            assert z[story].shape == (data.respdict[story] - 20, 32)
            np.testing.assert_allclose(z[story].std(0), 1, atol=1e-3)
            assert record["stories"][story]["lexical"] == record["stories"][story]["words"] > 0
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--text-model", folder, "--out", str(out)]) == 2
    assert "--text-model needs --layer" in capsys.readouterr().err
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--text-model", folder, "--layer", "5", "--out", str(out)]) == 2
    assert "--layer 5 out of range" in capsys.readouterr().err
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--text-model", str(tmp_path), "--layer", "1",
                     "--out", str(tmp_path / "x.npz")]) == 2
    assert ("cannot load a text model from" in (err := capsys.readouterr().err)  # a folder with no model in it
            and "a folder without config.json (it holds lm.npz, lm.npz.json)" in err)


def test_a_text_teacher_hub_id_at_a_revision_loads_and_records_that_commit(mini, text_model, tmp_path, monkeypatch):
    from conftest import hub_snapshot, point_hub_cache
    from model_zoo import build_random_text_model
    hub, repo = tmp_path / "hub", "toolkit-test/tiny-gpt2"
    point_hub_cache(monkeypatch, hub)
    folder = text_model[0].name_or_path
    hub_snapshot(hub, repo, folder, "a" * 40, refs=("main", "v1"))
    words = "the bear was next to pear i remember a and".split() + sorted(VOCABULARY)
    hub_snapshot(hub, repo, build_random_text_model(words, tmp_path / "retrained", seed=1), "b" * 40)
    common = ["--data-dir", str(mini / "ds003020"), "--layer", "1", "--stories", "souls", "--no-progress"]
    assert mtt.main([*common, "--text-model", repo, "--revision", "v1", "--out", str(tmp_path / "v1.npz")]) == 0
    assert mtt.main([*common, "--text-model", folder, "--out", str(tmp_path / "local.npz")]) == 0
    assert mtt.main([*common, "--text-model", repo, "--out", str(tmp_path / "main.npz")]) == 0
    teacher = json.loads((tmp_path / "v1.npz.json").read_text())["resolved"]["teacher"]
    assert teacher["model_revision"] == "a" * 40
    assert json.loads((tmp_path / "main.npz.json").read_text())["resolved"]["teacher"]["model_revision"] == "b" * 40
    with np.load(tmp_path / "v1.npz") as pinned, np.load(tmp_path / "local.npz") as local, \
            np.load(tmp_path / "main.npz") as latest:
        np.testing.assert_array_equal(pinned["souls"], local["souls"])  # v1's weights: the folder's
        assert not np.allclose(pinned["souls"], latest["souls"])


def test_the_miniatures_english1000_covers_its_words_and_groups_them_by_category(mini, tmp_path):
    root = mini / "ds003020"
    index, emb = tt.read_word_embedding(root / "derivative" / "english1000sm.hf5")
    assert emb.shape == (len(index), 985)
    # each content word lies nearest its own category's centroid (the word itself left out of it)
    for word, category in VOCABULARY.items():
        centroids = {c: np.mean([emb[index[w]] for w, cw in VOCABULARY.items() if cw == c and w != word], axis=0)
                     for c in CATEGORY_NAMES}
        assert min(centroids, key=lambda c: np.linalg.norm(emb[index[word]] - centroids[c])) == category, word
    assert mtt.main(["--data-dir", str(root), "--word-embedding", "english1000", "--out", str(tmp_path / "e.npz"),
                     "--no-progress"]) == 0
    stories = json.loads((tmp_path / "e.npz.json").read_text())["resolved"]["stories"]
    assert all(s["in_vocabulary"] == s["words"] > 0 for s in stories.values())  # function words included


def test_a_story_without_its_textgrid_is_a_data_error_naming_it(mini, tmp_path, capsys):
    root = link_tree(mini / "ds003020", tmp_path / "ds003020", without=("derivative/TextGrids/souls.TextGrid",))
    assert mtt.main(["--data-dir", str(root), "--word-embedding", "english1000", "--out", str(tmp_path / "t.npz"),
                     "--no-progress"]) == 3
    assert "TextGrid not found: " in (err := capsys.readouterr().err) and "souls.TextGrid" in err
    assert not (tmp_path / "t.npz").exists()



def test_a_text_teacher_reads_words_in_batches_of_batch_size(mini, text_model, tmp_path, monkeypatch):
    folder, seen = text_model[0].name_or_path, []
    real = tt.text_model_word_vectors

    def spy(labels, tokenizer, model, layer, context_words, batch_size, *rest):
        seen.append(batch_size)
        return real(labels, tokenizer, model, layer, context_words, batch_size, *rest)
    monkeypatch.setattr(tt, "text_model_word_vectors", spy)
    assert mtt.main(["--data-dir", str(mini / "ds003020"), "--text-model", folder, "--layer", "1", "--batch-size", "5",
                     "--stories", "souls", "--out", str(tmp_path / "lm.npz"), "--no-progress"]) == 0
    assert seen == [5]
    assert json.loads((tmp_path / "lm.npz.json").read_text())["resolved"]["teacher"]["batch_size"] == 5


def test_stories_without_audio_are_left_out_named_or_refused_and_requested_ones_kept_in_order(mini, tmp_path, capsys):
    root = link_tree(mini / "ds003020", tmp_path / "ds003020", without=("stimuli/souls.wav",))
    assert mtt.main(["--data-dir", str(root), "--word-embedding", "english1000", "--out", str(tmp_path / "d.npz"),
                     "--no-progress"]) == 0
    assert "souls" in capsys.readouterr().err.split("brain-tuning stories: ")[1]  # the note names it
    with np.load(tmp_path / "d.npz") as z:
        assert "souls" not in z.files and len(z.files) > 0
    assert mtt.main(["--data-dir", str(root), "--word-embedding", "english1000", "--stories", "stagefright", "souls",
                     "--out", str(tmp_path / "r.npz")]) == 3
    assert "no respdict entry and audio for ['souls']" in capsys.readouterr().err
    assert mtt.main(["--data-dir", str(root), "--word-embedding", "english1000", "--stories", "wheretheressmoke",
                     "stagefright", "--out", str(tmp_path / "o.npz"), "--no-progress"]) == 0
    with np.load(tmp_path / "o.npz") as z:
        assert z.files == ["wheretheressmoke", "stagefright"]  # as asked, not sorted
