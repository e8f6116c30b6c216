import pickle

import numpy as np
import pytest

from box_pickles import UnsafePickleError, load_box_textgrids, load_box_tr_grids, restricted_load
from data_utils import Ds003020
from make_demo_data import story_audio_seconds
from textgrid_utils import parse_textgrid, words_from_tiers


def test_miniature_pickles_load_with_the_real_module_paths(mini, mini_root):
    raw = (mini / "box" / "trfiles_huge.jbl").read_bytes()
    assert b"huth.stimulus_utils" in raw and b"TRFile" in raw
    assert b"ridge_utils.textgrid" in (mini / "box" / "grids_huge.jbl").read_bytes()
    data = Ds003020(mini_root)
    trfiles = {story: files[0] for story, files in restricted_load(mini / "box" / "trfiles_huge.jbl").items()}
    # as in the real files: scanner clocks, a different one per story, sound start and stop on that clock
    assert min(f.trtimes[0] for f in trfiles.values()) >= 100.0
    assert len({f.trtimes[0] for f in trfiles.values()}) == len(trfiles)
    for story, f in trfiles.items():
        assert f.soundstoptime - f.soundstarttime == pytest.approx(story_audio_seconds(data.respdict[story])), story
    grids = load_box_tr_grids(mini / "box" / "trfiles_huge.jbl")
    for story, grid in grids.items():
        # absolute scanner clocks differ per story; relative to sound start they equal the simulated grid
        np.testing.assert_allclose(grid.onsets, data.tr_grid(story).onsets, atol=1e-9)
    texts = load_box_textgrids(mini / "box" / "grids_huge.jbl")
    assert sorted(texts) == sorted(data.respdict)
    for story, text in texts.items():  # long, short and chronological TextGrids among them
        words = words_from_tiers(parse_textgrid(text, story))
        assert words.labels == data.words(story).labels, story
        np.testing.assert_array_equal(words.midpoints, data.words(story).midpoints)


def test_alignment_through_the_trfiles(mini, mini_root):
    data = Ds003020(mini_root)
    data.use_box_trfiles(mini / "box" / "trfiles_huge.jbl")
    assert data.tr_grid("souls").source.startswith("trfile")
    assert data.load_responses("UTS01", "souls").shape[0] == data.respdict["souls"] - 20


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_foreign_global_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.jbl"
    path.write_bytes(pickle.dumps({"story": Evil()}))
    with pytest.raises(UnsafePickleError, match=r"evil.jbl.*refused global '(posix|os)\.system'"):
        restricted_load(path)


def test_numpy_globals_other_than_the_array_reconstructors_are_refused(tmp_path):
    path = tmp_path / "func.jbl"
    path.write_bytes(pickle.dumps({"story": np.ones}, protocol=2))  # a numpy function: callable by a later REDUCE
    with pytest.raises(UnsafePickleError, match=r"func.jbl.*refused global 'numpy\.ones'"):
        restricted_load(path)


def _as_box_class(obj, module: str, name: str) -> bytes:
    """`obj` (an instance of a box_pickles stand-in) pickled as if its class were `module.name`."""
    from box_pickles import BoxTextGrid, BoxTRFile
    local = {BoxTextGrid: "BoxTextGrid", BoxTRFile: "BoxTRFile"}
    raw = pickle.dumps(obj, protocol=2)  # protocol 2 names globals as text lines: "c<module>\n<name>\n"
    old = f"cbox_pickles\n{local[type(next(iter(obj.values())))]}\n".encode()
    assert old in raw
    return raw.replace(old, f"c{module}\n{name}\n".encode())


def test_a_trfile_without_expectedtr_takes_the_median_tr_and_a_grid_without_text_is_named(tmp_path):
    from box_pickles import BoxTextGrid, BoxTRFile
    trf = BoxTRFile()
    trf.trtimes, trf.soundstarttime = [100.0, 102.0, 104.0, 106.0, 120.0], 110.0  # one long gap
    path = tmp_path / "trfiles.jbl"
    path.write_bytes(_as_box_class({"souls": trf}, "huth.stimulus_utils", "TRFile"))
    grid = load_box_tr_grids(path)["souls"]
    assert grid.tr == 2.0  # the median spacing, not the mean (5 s)
    np.testing.assert_array_equal(grid.onsets, [-10.0, -8.0, -6.0, -4.0, 10.0])
    tg = BoxTextGrid()
    tg.read_file = ["File type = ooTextFile"]  # the lines, not the text
    path = tmp_path / "grids.jbl"
    path.write_bytes(_as_box_class({"souls": tg}, "ridge_utils.textgrid", "TextGrid"))
    with pytest.raises(ValueError, match="grids.jbl: entry 'souls' has no text attribute 'read_file' \\(found list\\)"):
        load_box_textgrids(path)


def test_object_arrays_are_refused(tmp_path):
    import joblib
    path = tmp_path / "obj.jbl"
    joblib.dump({"x": np.array([{"a": 1}], dtype=object)}, path)
    with pytest.raises(UnsafePickleError, match="object array"):
        restricted_load(path)
    ok = tmp_path / "ok.jbl"
    joblib.dump({"x": np.arange(5.0)}, ok)
    np.testing.assert_array_equal(restricted_load(ok)["x"], np.arange(5.0))


@pytest.fixture(scope="module")
def trfiles_at_2_1(mini_root, tmp_path_factory):
    """A trfiles_huge.jbl whose recorded TRs are 2.1 s apart (the simulated grids: 2.0045 s), same TR counts."""
    from make_demo_data import write_box_pickles
    data = Ds003020(mini_root)
    folder = tmp_path_factory.mktemp("box21")
    texts = {s: (mini_root / "derivative" / "TextGrids" / f"{s}.TextGrid").read_text() for s in data.respdict}
    write_box_pickles(folder, texts, data.respdict, 2.1)
    return folder / "trfiles_huge.jbl"


def test_trfiles_replace_the_simulated_grids_and_are_recorded(mini_root, mini, trfiles_at_2_1, tmp_path):
    import hashlib

    from data_utils import DataError, open_ds003020
    simulated = open_ds003020(mini_root)
    assert simulated.timing_record() == {"tr": 2.0045, "tr_grids": "simulated from respdict.json (onsets k*TR - 10 s)"}
    data = open_ds003020(mini_root, trfiles=trfiles_at_2_1)
    grid = data.tr_grid("souls")
    assert grid.tr == 2.1 and grid.n_tr == simulated.tr_grid("souls").n_tr
    np.testing.assert_allclose(grid.onsets, np.arange(grid.n_tr) * 2.1 - 10.0, atol=1e-9)
    record = data.timing_record()
    assert record["trfiles"] == str(trfiles_at_2_1) and record["tr_grids"].startswith("trfiles")
    assert record["trfiles_sha256"] == hashlib.sha256(trfiles_at_2_1.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="grids_huge.jbl: not a usable Box trfiles pickle .*lacks 'trtimes'"):
        open_ds003020(mini_root, trfiles=mini / "box" / "grids_huge.jbl")  # the TextGrid pickle by mistake
    with pytest.raises(DataError, match="absent.jbl: trfiles pickle missing"):
        open_ds003020(mini_root, trfiles=tmp_path / "absent.jbl")
    with pytest.raises(DataError, match=r"box: a folder, expected the trfiles pickle; it holds \['grids_huge.jbl', "
                                        r"'trfiles_huge.jbl'\]"):
        open_ds003020(mini_root, trfiles=mini / "box")


def test_scripts_place_trs_by_the_trfiles(mini, tiny_models, trfiles_at_2_1, tmp_path, capsys):
    import json

    import brain_evaluate
    import brain_trainer_story as trainer
    import make_teacher_targets as mtt
    common = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS02", "--nc-dir", str(mini / "subject_NCs"),
              "--roi-file", str(mini / "rois" / "UTS02.json"), "--model-name", tiny_models["wav2vec2"], "--stride",
              "1.0", "--context", "3", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert brain_evaluate.main([*common, "--out", str(tmp_path / "sim")]) == 0
    assert brain_evaluate.main([*common, "--out", str(tmp_path / "trf"), "--trfiles", str(trfiles_at_2_1)]) == 0
    cfg = json.loads((tmp_path / "trf" / "config.json").read_text())["resolved"]
    assert cfg["timing"]["trfiles"] == str(trfiles_at_2_1) and cfg["feature_cache_hits"] > 0  # same features...
    sim, trf = (np.load(tmp_path / d / "layer_2.npz")["r"] for d in ("sim", "trf"))
    assert not np.allclose(sim, trf)  # ...read out at other TR times
    # teacher targets and the tuned run must sit on the same grids
    teacher = ["--data-dir", str(mini / "ds003020"), "--word-embedding", "english1000", "--no-progress"]
    assert mtt.main([*teacher, "--out", str(tmp_path / "t.npz"), "--trfiles", str(trfiles_at_2_1)]) == 0
    record = json.loads((tmp_path / "t.npz.json").read_text())["resolved"]["timing"]
    assert record["trfiles_sha256"] == cfg["timing"]["trfiles_sha256"]
    tune = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", tiny_models["wav2vec2"],
            "--targets-from", str(tmp_path / "t.npz"), "--batch-size", "16", "--num-epochs", "1", "--no-progress"]
    capsys.readouterr()
    assert trainer.main([*tune, "--out-dir", str(tmp_path / "no")]) == trainer.EXIT_DATA
    assert (f"t.npz: made with {trfiles_at_2_1} (its t.npz.json), but this run uses TR grids simulated from "
            f"respdict; give both the same --trfiles") in capsys.readouterr().err
    assert not (tmp_path / "no" / "config.json").exists()
    assert trainer.main([*tune, "--out-dir", str(tmp_path / "yes"), "--trfiles", str(trfiles_at_2_1)]) == 0
    resolved = json.loads((tmp_path / "yes" / "config.json").read_text())["args"]["resolved"]
    assert resolved["timing"] == record and resolved["window_samples"] == 5 * 2.1 * 16000  # five recorded TRs


@pytest.mark.parametrize("damage, message", [(lambda raw: raw[:300], "ends early"),
                                             (lambda raw: b"garbage\n", "not a usable Box trfiles pickle"),
                                             # another file given in its place: a JSON (an ROI file), a .npy
                                             (lambda raw: b'{"_subject": "UTS01"}', r"not a pickle \(KeyError: 123 "
                                              r"while reading its opcodes; it starts b'\{\"_subject"),
                                             (lambda raw: b"\x93NUMPY\x01\x00v\x00{'descr'", "not a pickle")])
def test_damaged_trfiles_name_the_file(mini, mini_root, tmp_path, damage, message):
    from data_utils import DataError
    path = tmp_path / "trfiles_huge.jbl"
    path.write_bytes(damage((mini / "box" / "trfiles_huge.jbl").read_bytes()))
    with pytest.raises(DataError, match=f"{path}: .*{message}"):
        Ds003020(mini_root).use_box_trfiles(path)


def test_a_story_missing_from_the_trfiles_is_named_with_the_file(mini_root, tmp_path):
    from data_utils import DataError
    from make_demo_data import write_box_pickles
    data = Ds003020(mini_root)
    lengths = {s: n for s, n in data.respdict.items() if s != "souls"}
    texts = {s: (mini_root / "derivative" / "TextGrids" / f"{s}.TextGrid").read_text() for s in lengths}
    write_box_pickles(tmp_path, texts, lengths, 2.0045)
    simulated = data.tr_grid("avatar")
    data.use_box_trfiles(tmp_path / "trfiles_huge.jbl")
    np.testing.assert_allclose(data.tr_grid("avatar").onsets, simulated.onsets, atol=1e-9)  # the others are read
    with pytest.raises(DataError, match=f"{tmp_path / 'trfiles_huge.jbl'}: no entry for story 'souls'"):
        data.tr_grid("souls")
