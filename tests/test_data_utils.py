import json
import re
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf

import data_utils
from data_utils import DataError, Ds003020, story_split, subject_id
from timing import AlignmentError


def test_subject_ids():
    assert subject_id("3") == subject_id(3) == subject_id("uts03") == "UTS03"
    with pytest.raises(DataError, match="found 'S3'"):
        subject_id("S3")


def test_responses_float32_nan_to_zero_and_voxel_subset(mini_root):
    data = Ds003020(mini_root)
    full = data.load_responses("UTS01", "alternateithicatom")
    assert full.dtype == np.float32 and full.shape == (data.respdict["alternateithicatom"] - 20, 120)
    with h5py.File(data.response_path("UTS01", "alternateithicatom")) as f:
        assert np.isnan(f["data"][:, 0]).all()  # the generator planted a NaN voxel
    assert (full[:, 0] == 0).all() and np.isfinite(full).all()
    idx = np.array([3, 10, 77])
    np.testing.assert_array_equal(data.load_responses("UTS01", "alternateithicatom", voxels=idx), full[:, idx])
    mask = np.zeros(120, bool)
    mask[idx] = True
    np.testing.assert_array_equal(data.load_responses("UTS01", "alternateithicatom", voxels=mask), full[:, idx])
    reps = data.load_repeats("UTS02", voxels=idx)
    assert reps.shape == (3, data.respdict["wheretheressmoke"] - 20, 3)


def test_subjects_differ_and_missing_story_is_reported(mini_root):
    data = Ds003020(mini_root)
    assert data.subjects() == ["UTS01", "UTS02", "UTS04"]
    assert len({data.n_voxels(s) for s in data.subjects()}) == 3
    split = story_split(data.stories("UTS04"))
    assert split.val == ["stagefright"] and split.missing["val"] == ["life"]
    assert split.test == ["wheretheressmoke"]
    assert "souls" in split.train and "legacy" in split.missing["train"]
    assert story_split(data.stories("UTS01")).val == ["stagefright", "life"]
    with pytest.raises(DataError, match=r"stories in more than one split: \['souls'\]"):
        story_split(data.stories("UTS01"), train=["souls"], val=["souls"])
    with pytest.raises(DataError, match=r"stories in more than one split: \['wheretheressmoke'\]"):
        story_split(data.stories("UTS01"), train=["souls", "wheretheressmoke"])  # the default test story
    every = story_split(["avatar", "life", "souls", "stagefright", "wheretheressmoke", "zebra"], preset="all")
    assert (every.train, every.val, every.test) == (["avatar", "souls", "zebra"], ["stagefright", "life"],
                                                    ["wheretheressmoke"])  # all but the validation and test stories
    assert story_split(["a", "b", "c"], preset="all", val=["b"], test=["c"]).train == ["a"]
    for lists in ({"train": ["souls", "avatar", "souls"]}, {"val": ["life", "life"]}):  # TRs that would count twice
        name, stories = next(iter(lists.items()))
        with pytest.raises(DataError, match=rf"stories listed more than once in the {name} split: \['{stories[-1]}'\]"):
            story_split(data.stories("UTS01"), **lists)
    lacking = story_split(["a", "b"], train=["a"], val=["b"])  # no test story: reported, not kept
    assert lacking.test == [] and lacking.missing == {"test": ["wheretheressmoke"]}


def test_subjects_are_the_uts_folders_only(tmp_path):
    base = tmp_path / "derivative" / "preprocessed_data"
    for name in ("UTS10", "UTS01", "figures", ".ipynb_checkpoints", "UTS02_old"):
        (base / name).mkdir(parents=True)
    (base / "UTS03").write_text("a file, not a folder")
    (tmp_path / "stimuli").mkdir()
    assert Ds003020(tmp_path).subjects() == ["UTS01", "UTS10"]
    shutil.rmtree(base)
    with pytest.raises(DataError, match=rf"^{re.escape(str(base))}: missing \(expected one folder per subject"):
        Ds003020(tmp_path).subjects()
    with pytest.raises(DataError, match=r"respdict.json: missing \(expected a JSON object story -> number of TRs\)"):
        Ds003020(tmp_path).respdict


def test_audio_44k_stereo_and_mono_to_16k(mini_root):
    data = Ds003020(mini_root)
    for story, channels in (("wheretheressmoke", 2), ("souls", 1)):
        info = sf.info(str(mini_root / "stimuli" / f"{story}.wav"))
        assert info.samplerate == 44100 and info.channels == channels
        wav = data.audio(story)
        assert wav.dtype == np.float32 and wav.ndim == 1
        assert len(wav) == pytest.approx((2 * data.respdict[story] - 20) * 16000, abs=2)
    # the second read comes from the cache and is identical
    np.testing.assert_array_equal(data.audio("souls"), wav)


def test_ready_wav_npy_is_preferred(mini_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(mini_root, root)
    (root / "stimuli" / "souls").mkdir()
    ready = root / "stimuli" / "souls" / "wav.npy"
    np.save(ready, np.ones(16000 * 64, np.float32))  # as long as souls.wav
    data = Ds003020(root)
    assert data.audio("souls").sum() == 16000 * 64
    assert data.audio_seconds("souls") == 64.0  # from the array's shape, not souls.wav's header
    data.check_audio("souls")
    np.save(ready, np.ones(16000 * 20, np.float32))  # cut short: the duration checks read the .npy too
    with pytest.raises(AlignmentError, match=rf"^{re.escape(str(ready))}: audio lasts 20.00 s but the TR grid"):
        data.check_audio("souls")
    with pytest.raises(AlignmentError, match=rf"the audio of 'souls' \({re.escape(str(ready))}\) lasts 20.00 s"):
        data.words("souls")
    for bad, found in [(np.ones((16000 * 64, 2), np.float32), "float32 array of shape (1024000, 2)"),
                       (np.ones(16000 * 64, np.int16), "int16 array of shape (1024000,)")]:  # int: no scale known
        np.save(ready, bad)
        for read in (data.audio, data.check_audio):
            with pytest.raises(DataError, match=rf"^{re.escape(str(ready))}: expected a 1-D float 16 kHz waveform "
                                                rf"\(samples,\), found {re.escape(found)}$"):
                read("souls")
    ready.write_bytes(b"RIFF....WAVEfmt ")  # a .wav renamed
    with pytest.raises(DataError, match=rf"^{re.escape(str(ready))}: not a readable .npy waveform \(not a .npy"):
        data.audio("souls")


def _copy(mini_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(mini_root, root)
    return root, Ds003020(root, cache_dir=tmp_path / "cache")


def test_audio_holding_nan_or_inf_is_an_error_naming_the_file_and_time(mini_root, tmp_path):
    root, data = _copy(mini_root, tmp_path)
    good = data.audio("souls")  # now in the cache
    path = root / "stimuli" / "souls.wav"
    wav, rate = sf.read(str(path), dtype="float32")
    wav[[4410, 4411, 8820]] = [np.nan, np.inf, -np.inf]  # from 0.1 s on, a float WAV written from bad data
    sf.write(str(path), wav, rate, subtype="FLOAT")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: 3 audio sample\(s\) are NaN or inf, the first at "
                                        rf"0.100 s; expected finite samples$"):
        data.audio("souls")
    with pytest.raises(DataError, match=r"souls.wav: 3 audio sample\(s\) are NaN or inf"):  # the probes' reader
        data_utils.load_wav_16k(path)
    cached = list((tmp_path / "cache" / "audio16k").glob("souls-*.npy"))
    assert len(cached) == 1 and np.array_equal(np.load(cached[0]), good)  # nothing bad was cached
    sf.write(str(path), np.nan_to_num(wav, posinf=0, neginf=0), rate, subtype="FLOAT")
    np.testing.assert_allclose(data.audio("souls"), good, atol=1e-4)  # the repaired file reads again
    stale = good.copy()
    stale[16000] = np.nan  # a cache entry written before the check
    for entry in (tmp_path / "cache" / "audio16k").glob("souls-*.npy"):
        np.save(entry, stale)
    with pytest.raises(DataError, match=r"souls.wav: 1 audio sample\(s\) are NaN or inf, the first at 1.000 s"):
        data.audio("souls")
    (root / "stimuli" / "souls").mkdir()
    np.save(root / "stimuli" / "souls" / "wav.npy", stale)  # a ready 16 kHz waveform
    with pytest.raises(DataError, match=r"souls/wav.npy: 1 audio sample\(s\) are NaN or inf, the first at 1.000 s"):
        data.audio("souls")


def test_bad_inputs_name_file_expected_and_found(mini_root, tmp_path):
    root, data = _copy(mini_root, tmp_path)
    path = data.response_path("UTS01", "souls")
    with h5py.File(path, "r+") as f:
        d = f["data"][:-1]
        del f["data"]
        f["resp"] = d
    with pytest.raises(DataError, match=r"souls.hf5: expected key 'data', found keys \['resp'\]"):
        data.load_responses("UTS01", "souls")
    with h5py.File(path, "r+") as f:
        f["data"] = f["resp"][:]
    with pytest.raises(AlignmentError, match=r"souls.hf5: response has 21 rows.*37 TRs.*22 rows were expected"):
        data.load_responses("UTS01", "souls")
    with pytest.raises(AlignmentError, match=r"souls.hf5: response has 21 rows.*37 TRs.*22 rows were expected"):
        data.n_response_rows("UTS01", "souls")  # from the file's header, checked as load_responses checks
    with h5py.File(data.response_path("UTS01", "avatar"), "r+") as f:  # text where numbers belong
        numbers = f["data"][()]
        del f["data"]
        f["data"] = numbers.astype("S6")
    message = r"UTS01/avatar.hf5: 'data' must hold numbers \(float64 in ds003020\), found dtype \|S6"
    with pytest.raises(DataError, match=message):
        data.load_responses("UTS01", "avatar")
    assert any(re.search(message, p) for p in data_utils.summarize(data, ["UTS01"])[1])  # the validation too
    with h5py.File(data.response_path("UTS01", "avatar"), "r+") as f:
        del f["data"]
        f["data"] = numbers.astype(np.float16)  # any numbers are read (as float32)
    np.testing.assert_allclose(data.load_responses("UTS01", "avatar"), np.nan_to_num(numbers), atol=0.01, rtol=0.01)
    rows = data.respdict["avatar"] - 20
    assert data.n_response_rows("UTS01", "avatar") == rows == len(data.load_responses("UTS01", "avatar"))
    path.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="souls.hf5: not a readable HDF5"):
        data.load_responses("UTS01", "souls")
    with pytest.raises(DataError, match="UTS04/life.hf5: response file missing"):
        data.load_responses("UTS04", "life")
    (root / "stimuli" / "avatar.wav").write_bytes(b"RIFF1234WAVEjunk")
    with pytest.raises(DataError, match="avatar.wav: unreadable audio"):
        data.audio("avatar")
    with pytest.raises(DataError, match="UTS02/avatar.hf5: voxel mask has length 3 but the file has 96 voxels"):
        data.load_responses("UTS02", "avatar", voxels=np.ones(3, bool))
    # UTS01's avatar in UTS02's folder: the same TRs, 120 voxels where UTS02 has 96 (an index selection would fit)
    shutil.copy(data.response_path("UTS01", "avatar"), data.response_path("UTS02", "avatar"))
    with pytest.raises(DataError, match=r"UTS02/avatar.hf5: has 120 voxels but .*UTS02/alternateithicatom.hf5 has 96: "
                                        r"every story of UTS02 must have the same voxels \(another subject's file\?\)"):
        data.load_responses("UTS02", "avatar", voxels=np.arange(10))


def test_files_a_partial_download_left_as_placeholders_say_how_to_fetch_them(mini_root, tmp_path):
    import downstream_data as dd
    from data_utils import Ds003020, not_downloaded_hint
    from conftest import link_tree
    root = link_tree(mini_root, tmp_path / "ds003020")
    data = Ds003020(root)
    # DataLad before `datalad get`: each annexed file is a link into .git/annex/objects that does not exist yet
    for path in (data.response_path("UTS01", "souls"), data.audio_path("souls")):
        path.unlink()
        path.symlink_to(tmp_path / ".git" / "annex" / "objects" / "XX" / "SHA256E-s1--0")
    with pytest.raises(DataError, match=r"souls.hf5: response file missing \(a DataLad/git-annex link .*datalad get"):
        data.load_responses("UTS01", "souls")
    with pytest.raises(DataError, match=r"souls.wav: audio file missing \(a DataLad/git-annex link"):
        data.audio("souls")
    grid = data.textgrid_path("souls")
    grid.unlink()
    grid.symlink_to(tmp_path / ".git" / "annex" / "objects" / "YY" / "SHA256E-s2--0")
    for read in (data.words, data.phones):
        with pytest.raises(FileNotFoundError, match=r"souls.TextGrid \(a DataLad/git-annex link"):
            read("souls")
    # git-annex in unlocked mode and Git LFS (CREMA-D's distribution) leave small pointer files instead
    annexed = data.response_path("UTS01", "avatar")
    annexed.unlink()
    annexed.write_bytes(b"/annex/objects/SHA256E-s1234--abcd.hf5\n")
    with pytest.raises(DataError, match=r"avatar.hf5: not a readable HDF5 file .*git-annex pointer .*datalad get"):
        data.load_responses("UTS01", "avatar")
    wav = tmp_path / "crema_d" / "AudioWAV" / "1001_DFA_ANG_XX.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 55852\n")
    with pytest.raises(DataError, match=r"1001_DFA_ANG_XX.wav: unreadable audio .*Git LFS pointer.*git lfs pull"):
        dd.load_utterance_audio(dd.Utterance(wav, "train", "ANG", "1001"))
    # real files get no hint
    assert not_downloaded_hint(data.audio_path("avatar")) == not_downloaded_hint(tmp_path / "nowhere") == ""


def test_bad_metadata_name_file_expected_and_found(mini_root, tmp_path):
    root, data = _copy(mini_root, tmp_path)
    respdict = root / "derivative" / "respdict.json"
    good = json.loads(respdict.read_text())
    respdict.write_text(json.dumps({**good, "souls": 37.5}))
    with pytest.raises(DataError, match=r"respdict.json: expected an integer number of TRs per story, found 37.5 "
                                        r"for 'souls' \(1 such entries\)"):
        Ds003020(root).tr_grid("souls")
    respdict.write_bytes(b"\xff\x00{}")  # damaged: named with the byte, not a bare UnicodeDecodeError
    with pytest.raises(DataError, match=r"respdict.json: expected UTF-8 \(or UTF-16 with a byte-order mark\) text, "
                                        r"found byte 0xff at offset 0"):
        Ds003020(root).tr_grid("souls")
    respdict.write_text(json.dumps({**good, "souls": True}))  # JSON true is an int to Python, not a TR count
    with pytest.raises(DataError, match=r"respdict.json: expected an integer number of TRs per story, found True "
                                        r"for 'souls' \(1 such entries\)"):
        Ds003020(root).tr_grid("souls")
    respdict.write_text(json.dumps({**good, "souls": 5}))
    with pytest.raises(AlignmentError, match=r"respdict.json: story 'souls': respdict value 5 leaves 0 TRs"):
        Ds003020(root).tr_grid("souls")
    respdict.write_text("[1, 2]")
    with pytest.raises(DataError, match="respdict.json: expected a JSON object of story -> integer, found list"):
        Ds003020(root).respdict
    respdict.write_text("{")
    with pytest.raises(DataError, match="respdict.json: not valid JSON"):
        Ds003020(root).respdict
    respdict.write_text(json.dumps(good))
    with pytest.raises(DataError, match="respdict.json: no entry for story 'nosuchstory'"):
        data.tr_grid("nosuchstory")
    with pytest.raises(DataError, match=r"UTS09: no response folder for subject UTS09 \(found subjects "
                                        r"\['UTS01', 'UTS02', 'UTS04'\]\)"):
        data.stories(9)


def test_compute_noise_ceiling_cli(mini, mini_root, tmp_path, capsys):
    from compute_noise_ceiling import main
    from run_utils import EXIT_DATA
    assert main(["--data-dir", str(mini_root), "--subject", "4", "--out", str(tmp_path)]) == 0
    nc = np.load(tmp_path / "UTS04.npy")
    np.testing.assert_allclose(nc, np.load(mini / "subject_NCs" / "UTS04.npy"))
    made = json.loads((tmp_path / "UTS04.json").read_text())  # how it was made, beside it
    assert (made["subject"], made["story"], made["n_repeats"]) == ("UTS04", "wheretheressmoke", 3)
    assert made["rows"] == [0, Ds003020(mini_root).n_response_rows("UTS04", "wheretheressmoke")]  # every row
    assert made["n_voxels"] == nc.size and made["above_0.4"] == int((nc > 0.4).sum()) and made["versions"]["numpy"]
    capsys.readouterr()
    no_repeats = ["--data-dir", str(mini_root), "--subject", "4", "--story", "souls", "--out", str(tmp_path / "x")]
    assert main(no_repeats) == EXIT_DATA
    assert "souls.hf5" in capsys.readouterr().err and not (tmp_path / "x").exists()  # named, nothing written
    assert main(no_repeats[:-4] + ["--story", "wheretheresmoke", "--out", str(tmp_path / "x")]) == EXIT_DATA
    assert "'wheretheresmoke': did you mean 'wheretheressmoke'?" in capsys.readouterr().err
    assert main(no_repeats[:2] + ["--subject", "9", "--out", str(tmp_path / "x")]) == EXIT_DATA  # no such subject
    assert ("UTS09: no response folder for subject UTS09 (found subjects ['UTS01', 'UTS02', 'UTS04'])"
            in capsys.readouterr().err)  # not "UTS09/wheretheressmoke.hf5: response file missing"


def test_compute_noise_ceiling_on_a_full_disk_exits_6_and_keeps_the_previous_file(mini_root, tmp_path, monkeypatch,
                                                                                   capsys):
    import atomic_io
    import run_utils
    from compute_noise_ceiling import main
    args = ["--data-dir", str(mini_root), "--subject", "4", "--out", str(tmp_path)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(f, array, allow_pickle):  # numpy's OSError on a full disk names no file
        raise OSError("2000000 requested and 786400 written")
    monkeypatch.setattr(atomic_io.np, "save", disk_full)
    capsys.readouterr()
    assert main(args) == run_utils.EXIT_WRITE
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'UTS04.npy'}: could not be written (OSError: ")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the ceiling and its record as they were
    monkeypatch.undo()
    calls = []

    def second_fsync_fails(fd):  # whichever of the two files is written second finds the disk full
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic_io.os, "fsync", second_fsync_fails)
    assert main(args + ["--first-row", "40"]) == run_utils.EXIT_WRITE  # another ceiling: its pair must not mix
    assert len(calls) == 2 and "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_noise_ceiling_in_voxel_blocks_equals_it_at_once_and_its_record_counts_strictly_above(mini_root, tmp_path,
                                                                                              monkeypatch):
    import compute_noise_ceiling
    from eval_utils import noise_ceiling
    data = Ds003020(mini_root)
    whole = noise_ceiling(data.load_repeats("UTS01"))
    for block in (1, 7, whole.size - 1):  # blocks of one voxel, uneven blocks, a last block of one voxel
        np.testing.assert_allclose(compute_noise_ceiling.subject_noise_ceiling(data, "UTS01", block=block), whole,
                                   rtol=1e-12)
    made = np.array([0.4, 0.41, 0.2, 0.9])  # one voxel exactly at the trainer's threshold: not above it
    monkeypatch.setattr(compute_noise_ceiling, "subject_noise_ceiling", lambda *a, **k: made)
    assert compute_noise_ceiling.main(["--data-dir", str(mini_root), "--subject", "UTS01", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "UTS01.json").read_text())
    assert (record["above_0.4"], record["median"]) == (2, pytest.approx(0.405))


def test_noise_ceiling_on_the_rows_the_evaluation_scores(mini_root, tmp_path, capsys):
    from compute_noise_ceiling import main
    from eval_utils import noise_ceiling
    data = Ds003020(mini_root)
    repeats, n_rows = data.load_repeats("UTS01"), data.n_response_rows("UTS01", "wheretheressmoke")
    assert main(["--data-dir", str(mini_root), "--subject", "UTS01", "--first-row", "40", "--out", str(tmp_path)]) == 0
    nc = np.load(tmp_path / "UTS01.npy")
    np.testing.assert_allclose(nc, noise_ceiling(repeats[:, 40:]))  # data[40:] <-> individual_repeats[:, 40:]
    assert np.abs(nc - noise_ceiling(repeats)).max() > 1e-3  # not the all-rows ceiling
    assert json.loads((tmp_path / "UTS01.json").read_text())["rows"] == [40, n_rows]
    assert f"rows 40:{n_rows} of 3 repeats" in capsys.readouterr().out
    too_far = ["--data-dir", str(mini_root), "--subject", "UTS01", "--first-row", str(n_rows - 1),
               "--out", str(tmp_path / "x")]
    assert main(too_far) == data_utils.EXIT_DATA  # one row left: named, expected and found, nothing written
    assert (f"wheretheressmoke.hf5: --first-row {n_rows - 1} leaves 1 of its {n_rows} rows; a noise ceiling needs at "
            f"least 2 (expected a first row below {n_rows - 1})") in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main([*too_far[:-4], "--first-row", "10000", *too_far[-2:]]) == data_utils.EXIT_DATA
    assert f"--first-row 10000 leaves 0 of its {n_rows} rows" in capsys.readouterr().err  # not a negative count


def test_summary_cli_reports_aligned_and_names_a_corrupted_file(mini_root, tmp_path, capsys):
    assert data_utils.main(["--data-dir", str(mini_root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    stories = summary["subjects"]["UTS01"]["stories"]
    assert all(s["aligned"] for s in stories.values()) and stories["wheretheressmoke"]["repeats"] == 3
    assert stories["souls"]["hf5_rows"] == stories["souls"]["tr_grid"] - 15
    assert stories["souls"]["words"] > 50 and stories["souls"]["audio_s"] == pytest.approx(64.0, abs=0.01)
    root, _ = _copy(mini_root, tmp_path)
    (root / "derivative" / "TextGrids" / "avatar.TextGrid").write_text("garbage")
    assert data_utils.main(["--data-dir", str(root)]) == data_utils.EXIT_DATA
    assert "avatar.TextGrid" in capsys.readouterr().err
    summary, problems = data_utils.summarize(data_utils.Ds003020(root))  # a stimulus every subject hears:
    assert sum("avatar.TextGrid" in p for p in problems) == 1  # one problem, not one per subject
    assert all("avatar.TextGrid" in s["stories"]["avatar"]["error"] for s in summary["subjects"].values())
    # the audio's seconds still read beside the TextGrid's problem (they read None), and the line names the problem
    assert summary["subjects"]["UTS01"]["stories"]["avatar"]["audio_s"] == pytest.approx(56.0, abs=0.01)
    assert data_utils.main(["--data-dir", str(root), "--subject", "UTS01"]) == data_utils.EXIT_DATA
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("avatar"))
    assert "audio_s=56.0 words=None PROBLEM: " in line and line.endswith(problems[0])
    with h5py.File(root / "derivative" / "preprocessed_data" / "UTS02" / "souls.hf5", "w") as f:
        f["data"] = np.zeros(5)  # 1-D: reported as a problem of this file, not a crash
    assert data_utils.main(["--data-dir", str(root)]) == data_utils.EXIT_DATA
    _, problems = data_utils.summarize(data_utils.Ds003020(root))
    assert any(p.endswith("UTS02/souls.hf5: 'data' must be 2-D (TRs, voxels), found shape (5,)") for p in problems)
    assert data_utils.main(["--data-dir", str(tmp_path / "nowhere")]) == data_utils.EXIT_DATA
    capsys.readouterr()
    assert data_utils.main(["--data-dir", str(mini_root), "--subject", "9"]) == data_utils.EXIT_DATA
    out, err = capsys.readouterr()
    assert out == "UTS09: no response files (see the error below)\n" and "no response folder for subject UTS09" in err


def test_summary_names_a_story_whose_rows_or_voxels_do_not_fit(mini_root, tmp_path):
    root, data = _copy(mini_root, tmp_path)
    rows = data.respdict["souls"] - 20
    with h5py.File(data.response_path("UTS01", "souls"), "r+") as f:  # one row short of the TR grid
        short = f["data"][:-1]
        del f["data"]
        f["data"] = short
    with h5py.File(data.response_path("UTS01", "avatar"), "r+") as f:  # another subject's voxel count
        wide = np.zeros((f["data"].shape[0], 7))
        del f["data"]
        f["data"] = wide
    summary, problems = data_utils.summarize(Ds003020(root), ["UTS01"])
    stories = summary["subjects"]["UTS01"]["stories"]
    assert not stories["souls"]["aligned"] and not stories["avatar"]["aligned"]
    assert stories["alternateithicatom"]["aligned"]
    assert any(re.search(rf"UTS01/souls.hf5: response has {rows - 1} rows.*{rows} rows were expected", p)
               for p in problems)
    assert any(re.search(r"UTS01/avatar.hf5: has 7 voxels but other stories of UTS01 have 120", p) for p in problems)
    assert len(problems) == 2


def test_generator_is_bit_identical_for_a_seed_and_differs_across_seeds(mini, tmp_path):
    # A second build in this process (after the session's other synthesis) must reproduce every file byte
    # for byte: speech_synth reloads espeak-ng per utterance, so no synthesis state leaks between builds.
    from make_demo_data import build
    from textgrid_utils import read_textgrid, words_from_tiers
    root = build(tmp_path / "again", seed=0, size="tiny", quiet=True)

    def contents(folder):  # tens of MB: compare the bytes themselves
        return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}
    for part in ("ds003020", "ground_truth", "rois"):
        first, again = contents(mini / part), contents(root.parent / part)
        assert first and first.keys() == again.keys()
        assert [k for k in first if first[k] != again[k]] == [], part
    w1 = words_from_tiers(read_textgrid(root / "derivative/TextGrids/souls.TextGrid"))
    other = build(tmp_path / "seed1", seed=1, size="tiny", quiet=True)
    assert words_from_tiers(read_textgrid(other / "derivative/TextGrids/souls.TextGrid")).labels != w1.labels


def test_miniatures_record_what_made_them(mini, downstream):
    import json
    from importlib import metadata
    from timing import DEFAULT_TR
    for folder, settings in ((mini, {"seed": 0, "size": "tiny", "tr": DEFAULT_TR}),
                             (downstream, {"seed": 0, "size": "tiny"})):
        record = json.loads((folder / "build.json").read_text())
        assert {k: record[k] for k in settings} == settings, folder
        # the speech comes from the espeak-ng wheel: its version decides the audio
        assert record["versions"]["espeakng-loader"] == metadata.version("espeakng-loader")
        assert record["command"] and record["created"]


def test_size_presets_fit_the_story_list_and_an_oversized_one_is_refused(tmp_path, monkeypatch):
    import make_demo_data
    from make_demo_data import SIZES, TRAIN_STORIES, SizePreset, build
    # the large preset uses every ds003020 train story; none may exceed the list (zip would truncate silently)
    assert len(SIZES["large"].train_resp) == len(TRAIN_STORIES)
    assert all(len(p.train_resp) <= len(TRAIN_STORIES) for p in SIZES.values())
    too_big = SizePreset(train_resp=(40,) * (len(TRAIN_STORIES) + 1), val_resp=(38, 36), test_resp=80,
                         n_repeats=3, voxels=SIZES["tiny"].voxels)
    monkeypatch.setitem(make_demo_data.SIZES, "too_big", too_big)
    with pytest.raises(ValueError, match=rf"at most {len(TRAIN_STORIES)} train stories.*found {len(TRAIN_STORIES) + 1}"):
        build(tmp_path / "x", size="too_big", quiet=True)
    assert not (tmp_path / "x").exists()


def test_story_plan_draws_the_demo_stories_first_so_a_larger_preset_keeps_them():
    from make_demo_data import CORE_TRAIN_STORIES, SIZES, TEST_STORY, TRAIN_STORIES, VAL_STORIES, story_plan
    demo, demo_extra = story_plan(SIZES["demo"])
    large, large_extra = story_plan(SIZES["large"])
    core = TRAIN_STORIES[:CORE_TRAIN_STORIES]
    assert list(demo)[:len(core) + len(VAL_STORIES) + 1] == [*core, *VAL_STORIES, TEST_STORY]
    assert demo_extra == set(TRAIN_STORIES[CORE_TRAIN_STORIES:12]) and large_extra == set(TRAIN_STORIES[6:])
    assert list(large.items())[:len(demo)] == list(demo.items())  # same stories, lengths and order of draws
    tiny, tiny_extra = story_plan(SIZES["tiny"])  # fewer train stories than the core: none from the extra stream
    assert list(tiny) == [*TRAIN_STORIES[:3], *VAL_STORIES, TEST_STORY] and tiny_extra == set()
    assert list(tiny.values()) == [*SIZES["tiny"].train_resp, *SIZES["tiny"].val_resp, SIZES["tiny"].test_resp]


def test_subject_rois_put_mixed_voxels_in_both_and_split_the_hemispheres():
    from make_demo_data import subject_rois
    types = np.array(["auditory", "language", "mixed", "noise", "language"])
    rois = subject_rois(types, "UTS09")
    assert rois["auditory"] == [0, 2] and rois["language"] == [1, 2, 4]
    assert rois["left_hemisphere"] == [0, 1] and rois["right_hemisphere"] == [2, 3, 4]
    assert rois["_subject"] == "UTS09"


def test_generators_refuse_to_replace_a_folder_that_is_not_their_output(tmp_path, capsys):
    import make_demo_data
    import make_downstream_data
    from run_utils import EXIT_USAGE
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    # a parent of real downloads (the real layouts' names) is not a miniature either
    for real in ("ds003020/derivative", "timit/TRAIN", "words"):
        (folder / real).mkdir(parents=True)
    for script, what in ((make_demo_data, "miniature dataset"), (make_downstream_data, "folder of miniature downstream")):
        assert script.main(["--out", str(folder), "--size", "tiny"]) == EXIT_USAGE
        assert f"home: not a {what}" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing generated, nothing deleted
        assert (folder / "thesis.tex").read_text() == "precious" and (folder / "ds003020" / "derivative").is_dir()


def test_a_tr_the_miniatures_audio_cannot_fit_is_a_usage_error_before_anything_is_written(tmp_path, capsys):
    # The audio keeps ds003020's 2·respdict − 20 s: at TR 2.5 s the grid's last response TR of a respdict-40
    # story ends at (40 − 10)·2.5 − 10 = 65 s, after its 60 s of audio; at 1.3 s the grid ends at 35.5 s.
    import make_demo_data
    for tr, found in (("2.5", "audio lasts 60.00 s but the TR grid of 'alternateithicatom' (respdict, 35 TRs) has "
                              "responses until 65.00 s"),
                      ("1.3", "ends 35.50 s after audio onset: more than 1.5x longer")):
        with pytest.raises(SystemExit) as exit_:
            make_demo_data.main(["--out", str(tmp_path / "mini"), "--size", "tiny", "--tr", tr])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"--tr {tr} does not fit the tiny miniature" in err and found in err
        assert list(tmp_path.iterdir()) == []
    assert make_demo_data.tr_problem("tiny", 2.0) is None and make_demo_data.tr_problem("demo", 1.5) is None


def test_further_training_stories_leave_the_other_stories_unchanged(mini, tmp_path, monkeypatch):
    # A preset with more training stories draws them after the test story, from a stream of their own: the
    # first stories, the validation and the test story keep their audio and words (only the responses'
    # scaling, computed over every story, may move), so scaling experiments compare like with like.
    import make_demo_data
    from make_demo_data import SIZES, TRAIN_STORIES, build
    monkeypatch.setattr(make_demo_data, "CORE_TRAIN_STORIES", len(SIZES["tiny"].train_resp))
    monkeypatch.setitem(make_demo_data.SIZES, "tiny_plus",
                        make_demo_data.replace(SIZES["tiny"], train_resp=SIZES["tiny"].train_resp + (40, 38)))
    root = build(tmp_path / "plus", seed=0, size="tiny_plus", quiet=True)
    first = mini / "ds003020"
    extra = list(TRAIN_STORIES[3:5])
    for story in json.loads((first / "derivative" / "respdict.json").read_text()):
        for rel in (f"stimuli/{story}.wav", f"derivative/TextGrids/{story}.TextGrid"):
            assert (root / rel).read_bytes() == (first / rel).read_bytes(), rel
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    assert set(respdict) - set(json.loads((first / "derivative" / "respdict.json").read_text())) == set(extra)
    texts = {s: (root / "derivative" / "TextGrids" / f"{s}.TextGrid").read_text() for s in respdict}
    assert len(set(texts.values())) == len(texts)  # the further stories are new text, not copies
    with h5py.File(root / "derivative/preprocessed_data/UTS01" / f"{extra[0]}.hf5") as f:
        # TR grid respdict - 5 rows, trimmed [10:-5], as every story's
        assert f["data"].shape == (respdict[extra[0]] - 20, SIZES["tiny"].voxels["UTS01"])


def test_macos_appledouble_files_are_not_stories(mini_root, tmp_path):
    from conftest import link_tree
    root = link_tree(mini_root, tmp_path / "ds003020")
    folder = root / "derivative" / "preprocessed_data" / "UTS01"
    for hf5 in list(folder.glob("*.hf5")):  # metadata files a copy through macOS leaves beside each file
        (folder / f"._{hf5.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (root / "derivative" / "preprocessed_data" / "._UTS01").write_bytes(b"\x00\x05\x16\x07")
    data, original = Ds003020(root), Ds003020(mini_root)
    assert data.stories("UTS01") == original.stories("UTS01") and "souls" in data.stories("UTS01")
    assert data.subjects() == original.subjects()


def test_a_root_one_level_off_is_named_with_the_real_root(mini_root, tmp_path):
    for wrong in (mini_root.parent, mini_root / "derivative"):  # the download's parent, or a folder inside it
        with pytest.raises(DataError, match=f"found nothing; the dataset root seems to be {mini_root}"):
            Ds003020(wrong)
    with pytest.raises(DataError, match=r"derivative: expected a ds003020 folder here .*found nothing$"):
        Ds003020(tmp_path)  # nothing near: no guess
    with pytest.raises(DataError, match=r"respdict.json: expected the ds003020 folder .*found a file$"):
        Ds003020(mini_root / "derivative" / "respdict.json")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'ds00302'}: no such folder \(expected the ds003020 root"):
        Ds003020(tmp_path / "ds00302")  # a mistyped path is named as such, not as a layout without derivative/


def test_read_columns_reads_a_run_of_voxels_as_a_slab_and_any_selection_right(tmp_path):
    from data_utils import read_columns
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 70, 50))
    values[1, 5, 12] = np.nan
    values[1, 6, [13, 14]] = [np.inf, -np.inf]  # read as 0 like NaN: z-scoring would spread them over the column
    with h5py.File(tmp_path / "r.hf5", "w") as f:
        f["individual_repeats"] = values

    class Recording:  # the dataset, noting which columns each read asked for
        def __init__(self, ds):
            self.ds, self.shape, self.asked = ds, ds.shape, []

        def __getitem__(self, key):
            self.asked.append(key[2] if len(key) > 2 else slice(None))
            return self.ds[key]

    with h5py.File(tmp_path / "r.hf5", "r") as f:
        for voxels, columns_read in ((np.arange(10, 30), slice(10, 30)), (np.arange(50) >= 40, slice(40, 50)),
                                     (np.array([3, 7, 12, 49]), slice(None)), (None, slice(None))):
            ds = Recording(f["individual_repeats"])
            got = read_columns(ds, voxels, tmp_path / "r.hf5", lead=(1,), block_rows=32)
            cols = slice(None) if voxels is None else voxels
            np.testing.assert_array_equal(got, np.nan_to_num(values[1][:, cols].astype(np.float32), posinf=0, neginf=0))
            assert ds.asked == [columns_read] * 3  # 70 rows in blocks of 32; a run of voxels: only its columns
        for voxels, found in ((np.array([3, 50]), "3..50"), (np.array([-1, 4]), "-1..4")):  # V = 50: 0..49
            with pytest.raises(DataError, match=rf"r.hf5: voxel index out of range \[0, 50\) \(found {found}\)"):
                read_columns(f["individual_repeats"], voxels, tmp_path / "r.hf5", lead=(1,))


def test_audio_that_does_not_cover_its_tr_grid_is_an_error_naming_the_file(mini_root, tmp_path):
    root, data = _copy(mini_root, tmp_path)
    grid = data.tr_grid("souls")
    wav = data.audio("souls")
    assert len(wav) / 16000 >= grid.tr_ends[grid.n_tr - 6]  # the miniature's own audio covers its grid
    path = root / "stimuli" / "souls.wav"
    sf.write(path, wav[:16000 * 20], 16000)  # truncated to 20 s
    with pytest.raises(AlignmentError, match=r"stimuli/souls.wav: audio lasts 20.00 s but the TR grid of 'souls'"):
        data.audio("souls")
    with pytest.raises(AlignmentError, match="souls.wav: audio lasts 20.00 s"):
        data.check_audio("souls")  # from the header alone
    _, problems = data_utils.summarize(data)
    assert sum("souls.wav: audio lasts 20.00 s" in p for p in problems) == 1  # one file, whichever subjects hear it
    sf.write(path, wav, 8000)  # the same samples under a header claiming half the rate: twice as long
    with pytest.raises(AlignmentError, match=r"souls.wav: audio lasts 128.00 s .* more than 1.5x longer"):
        data.check_audio("souls")


def test_a_textgrid_of_another_story_or_without_phones_is_an_error_naming_it(mini_root, tmp_path):
    import re

    from textgrid_utils import TextGridError
    root, data = _copy(mini_root, tmp_path)
    grids = root / "derivative" / "TextGrids"
    assert data.words("avatar").ends.max() <= data.audio_seconds("avatar")  # the miniature's own fit
    shutil.copy(grids / "souls.TextGrid", grids / "avatar.TextGrid")  # souls (64 s) on avatar's audio (56 s)
    for read in (data.words, data.phones):
        with pytest.raises(AlignmentError, match=r"TextGrids/avatar.TextGrid: words and phones go on until 63.62 s but "
                                                 r"the audio of 'avatar' \(.*stimuli/avatar.wav\) lasts 56.00 s"):
            read("avatar")
    (root / "stimuli" / "avatar.wav").unlink()  # no audio to check against (the english1000 teacher needs none)
    assert data.words("avatar").labels == data.words("souls").labels
    text = (grids / "souls.TextGrid").read_text()
    (grids / "souls.TextGrid").write_text(re.sub(r'text = "[A-Z]+[0-9]?"', 'text = ""', text))  # phone labels blanked
    with pytest.raises(TextGridError, match=r"souls.TextGrid: tier 0 holds no phone \(only silence markers or empty "
                                            r"labels\), so no phone features for 'souls'"):
        data.phones("souls")
    assert len(data.words("souls")) == len(data.words("avatar"))  # the words are still there and fit
    # an empty-labelled word interval (a word by the Huth convention, but no speech) may run past the audio's end
    from textgrid_utils import format_textgrid
    phones, words, end = data.phones("life"), data.words("life"), data.audio_seconds("life")
    (grids / "life.TextGrid").write_text(format_textgrid(
        {"phone": list(zip(phones.starts, phones.ends, phones.labels)),
         "word": [*zip(words.starts, words.ends, words.labels), (words.ends[-1], end + 5.0, "")]}, xmax=end + 5.0))
    assert data.words("life").labels == [*words.labels, ""]


def test_a_textgrid_with_its_tiers_in_the_other_order_is_an_error_naming_it(mini_root, tmp_path, capsys):
    from textgrid_utils import TextGridError, format_textgrid
    root, data = _copy(mini_root, tmp_path)
    phones, words, end = data.phones("souls"), data.words("souls"), data.audio_seconds("souls")
    # words first, phones second, as the Montreal Forced Aligner writes them: before, read without an error
    (root / "derivative" / "TextGrids" / "souls.TextGrid").write_text(format_textgrid(
        {"word": list(zip(words.starts, words.ends, words.labels)),
         "phone": list(zip(phones.starts, phones.ends, phones.labels))}, xmax=end))
    message = (rf"TextGrids/souls.TextGrid: tier 0 \('word'\) should hold ARPAbet phones \(tier 0 phones, tier 1 "
               rf"words\), but \d+ of its {len(words)} labels are phones; others: '{words.labels[0]}', .*tier 1 "
               rf"\('phone'\) holds phones: the tiers are in the other order")
    for read in (data.words, data.phones):
        with pytest.raises(TextGridError, match=message):
            read("souls")
    assert len(data.words("avatar")) > 0  # the other stories still read
    assert data_utils.main(["--data-dir", str(root)]) == 3
    assert re.search(message, capsys.readouterr().err)


def test_repeats_must_be_two_or_more_with_the_rows_and_voxels_of_data(mini_root, tmp_path, capsys):
    from compute_noise_ceiling import main as nc_main
    root, data = _copy(mini_root, tmp_path)
    path = data.response_path("UTS01", "wheretheressmoke")
    with h5py.File(path, "r") as f:
        repeats, rows, voxels = f["individual_repeats"][()], *f["data"].shape
    assert data.load_repeats("UTS01").shape == repeats.shape == (3, rows, voxels)
    for bad, message in ((repeats[:, :-3], rf"has shape \(3, {rows - 3}, {voxels}\) but 'data' has \({rows}, {voxels}\)"),
                         (repeats[:, :, :-1], rf"has shape \(3, {rows}, {voxels - 1}\) but 'data'"),
                         (repeats[:1], r"holds 1 repeat; a noise ceiling needs at least 2"),
                         (repeats[0], rf"must be 3-D \(repeats, TRs, voxels\), found shape \({rows}, {voxels}\)"),
                         (repeats.astype("S8"), r"must hold numbers \(float64 in ds003020\), found dtype \|S8")):
        with h5py.File(path, "r+") as f:
            del f["individual_repeats"]
            f["individual_repeats"] = bad
        with pytest.raises(DataError, match=rf"wheretheressmoke.hf5: 'individual_repeats' {message}"):
            data.load_repeats("UTS01")
        assert nc_main(["--data-dir", str(root), "--subject", "UTS01", "--out", str(tmp_path / "nc")]) == data_utils.EXIT_DATA
        assert "'individual_repeats'" in capsys.readouterr().err and not (tmp_path / "nc").exists()
        assert any("'individual_repeats'" in p for p in data_utils.summarize(data)[1])
    with h5py.File(path, "r+") as f:  # no repeats at all, in a file too short for a ceiling: the repeats are named
        one_row = f["data"][:1]
        del f["individual_repeats"], f["data"]
        f["data"] = one_row
    assert nc_main(["--data-dir", str(root), "--subject", "UTS01", "--out", str(tmp_path / "nc")]) == data_utils.EXIT_DATA
    err = capsys.readouterr().err
    assert "wheretheressmoke.hf5: expected key 'individual_repeats'" in err and "--first-row" not in err, err
