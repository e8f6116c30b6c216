"""Readers of the downstream datasets on their miniature layouts, and on hand-made files."""
import json
import re
import shutil
from pathlib import Path

import pytest

import downstream_data as dd
from data_utils import DataError


def test_timit_folding_covers_61_phones_into_39():
    assert len(dd.TIMIT_61) == 61 and len(dd.TIMIT_39) == 39
    folded = {dd.fold_timit_phone(p) for p in dd.TIMIT_61} - {None}
    assert folded == set(dd.TIMIT_39)
    assert dd.fold_timit_phone("q") is None
    assert [dd.fold_timit_phone(p) for p in ("ao", "ix", "zh", "bcl", "h#", "pau", "epi", "ux", "EN")] == \
        ["aa", "ih", "sh", "sil", "sil", "sil", "sil", "uw", "n"]
    with pytest.raises(DataError, match="unknown TIMIT phone"):
        dd.fold_timit_phone("xx")


def _hand_timit(root, utt="SX101"):
    spk = root / "train" / "dr3" / "mabc0"  # lower case copy of TIMIT
    spk.mkdir(parents=True)
    (root / "TEST" / "DR1" / "FXYZ1").mkdir(parents=True)
    for folder in (spk, root / "TEST" / "DR1" / "FXYZ1"):
        (folder / f"{utt.lower()}.phn").write_text("0 1600 h#\n1600 2400 q\n2400 4000 ix\n4000 4800 bcl\n4800 6400 b\n"
                                                  "6400 8000 h#\n")
        (folder / f"{utt.lower()}.wrd").write_text("2400 6400 ib\n")
        (folder / f"{utt.lower()}.wav").write_bytes(b"")
    return spk


def test_timit_reader_hand_made_phn(tmp_path):
    _hand_timit(tmp_path)
    utts = dd.read_timit(tmp_path, val_fraction=0.0)
    train = [u for u in utts if u.split in ("train", "val")][0]
    assert train.label == "SX" and train.speaker == "MABC0"
    # q dropped, ix -> ih, bcl -> sil; times in seconds at 16 kHz
    assert [p for _, _, p in train.segments] == ["sil", "ih", "sil", "b", "sil"]
    assert train.segments[1][:2] == (0.15, 0.25)
    assert train.words == [(0.15, 0.4, "ib")]
    assert {u.split for u in utts} == {"val", "test"}  # one train speaker: held out as val (at least one)


def test_timit_reader_takes_kaggles_riff_copies_once_and_points_into_its_data_folder(tmp_path):
    root = tmp_path / "timit"
    spk = _hand_timit(root / "data")
    (spk / "sx101.wav.wav").write_bytes(b"")            # RIFF copy beside the SPHERE original
    test_spk = root / "data" / "TEST" / "DR1" / "FXYZ1"
    (test_spk / "sx101.wav").rename(test_spk / "SX101.WAV.wav")  # only the copy
    with pytest.raises(DataError, match=r"no TRAIN/ folder .*data holds TRAIN: pass that folder$"):
        dd.read_timit(root)
    utts = dd.read_timit(root / "data", val_fraction=0.0)
    assert sorted(u.path.name for u in utts) == ["SX101.WAV.wav", "sx101.wav.wav"]  # one utterance per speaker
    assert all([p for _, _, p in u.segments] == ["sil", "ih", "sil", "b", "sil"] for u in utts)
    assert all(u.words == [(0.15, 0.4, "ib")] and u.label == "SX" for u in utts)


def test_timit_reader_errors(tmp_path):
    with pytest.raises(DataError, match="no TRAIN/ folder"):
        dd.read_timit(tmp_path)
    spk = _hand_timit(tmp_path)
    (spk / "sx101.phn").write_text("0 x h#\n")
    with pytest.raises(DataError, match=r"sx101.phn, line 1: expected 'start_sample end_sample label'"):
        dd.read_timit(tmp_path)
    (spk / "sx101.phn").write_text("0 1600 h#\n1600 2400 qq\n")
    with pytest.raises(DataError, match=r"mabc0/sx101.phn: unknown TIMIT phone label 'qq'"):
        dd.read_timit(tmp_path)
    (spk / "sx101.phn").write_text("\n")  # an empty copy: utterance-level labels would all be "absent"
    with pytest.raises(DataError, match=r"mabc0/sx101.phn: no phone segments \(an empty or truncated file\)"):
        dd.read_timit(tmp_path)
    (spk / "sx101.phn").write_text("0 1600 h#\n")
    (spk / "sx101.wav").unlink()  # a copy that lost its audio: an error, not a speaker quietly left out
    with pytest.raises(DataError, match=r"mabc0/sx101.phn: no matching .WAV audio beside it \(1 such .PHN in "):
        dd.read_timit(tmp_path)
    (spk / "sx101.phn").unlink()
    (spk / "sx101.wav").write_bytes(b"")  # and the reverse: audio whose alignment is missing
    with pytest.raises(DataError, match=r"mabc0/sx101.wav: no matching .PHN alignment in .*mabc0$"):
        dd.read_timit(tmp_path)
    (spk / "sx101.phn").write_text("0 1600 h#\n")
    for ext in ("wav", "phn"):  # not a TIMIT utterance id (SA, SI or SX): its sentence type is unknown
        (spk / f"sx101.{ext}").rename(spk / f"xx101.{ext}")
    with pytest.raises(DataError, match=r"mabc0/xx101.wav: utterance id 'XX101' does not start with SA, SI or SX"):
        dd.read_timit(tmp_path)
    for folder in (spk, tmp_path / "TEST" / "DR1" / "FXYZ1"):
        shutil.rmtree(folder)
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: TIMIT layout found but no .WAV files under"):
        dd.read_timit(tmp_path)


def test_an_alignment_running_past_its_audio_stops_the_probe_before_extraction(tmp_path):
    import numpy as np
    import soundfile as sf
    from probe_tasks import drop_short_utterances
    spk = _hand_timit(tmp_path)  # its .PHN ends at sample 8000 (0.5 s), its .WRD at 6400
    for wav in tmp_path.rglob("*.wav"):
        sf.write(wav, np.zeros(8000, np.float32), 16000)
    kept, lengths, skipped = drop_short_utterances(dd.read_timit(tmp_path, val_fraction=0.0), progress=False)
    assert len(kept) == 2 and lengths == [8000, 8000] and skipped == []
    sf.write(spk / "sx101.wav", np.zeros(7000, np.float32), 16000)  # 0.4375 s: the .PHN runs 0.0625 s past it
    with pytest.raises(DataError, match=r"mabc0/sx101.wav: its time alignment \(.PHN/.WRD\) ends at 0.500 s but "
                                         r"the audio lasts 0.438 s"):
        drop_short_utterances(dd.read_timit(tmp_path, val_fraction=0.0), progress=False)
    sf.write(spk / "sx101.wav", np.zeros(8000, np.float32), 16000)
    (spk / "sx101.wrd").write_text("2400 9600 ib\n")  # the words run past the audio, the phones do not
    with pytest.raises(DataError, match=r"mabc0/sx101.wav: its time alignment \(.PHN/.WRD\) ends at 0.600 s"):
        drop_short_utterances(dd.read_timit(tmp_path, val_fraction=0.0), progress=False)
    (spk / "sx101.wrd").write_text("2400 6400 ib\n")
    sf.write(spk / "sx101.wav", np.zeros(7500, np.float32), 16000)  # 0.031 s short: within the slack
    assert len(drop_short_utterances(dd.read_timit(tmp_path, val_fraction=0.0), progress=False)[0]) == 2
    sf.write(spk / "sx101.wav", np.zeros(800, np.float32), 16000)  # 0.05 s: a cut-off recording, left out
    assert drop_short_utterances(dd.read_timit(tmp_path, val_fraction=0.0), progress=False)[2] == [str(spk / "sx101.wav")]


def test_miniature_timit_layout(downstream):
    import soundfile as sf
    utts = dd.read_timit(downstream / "timit")
    counts = dd.check_splits(utts, "timit")
    assert all(n > 0 for n in counts.values())
    assert {u.label for u in utts} == {"SA", "SI", "SX"}
    # speakers never cross splits
    by_speaker = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, set()).add(u.split)
    assert all(len(s) == 1 for s in by_speaker.values())
    # .WAV is NIST SPHERE at 16 kHz, as in the LDC release
    u = utts[0]
    assert u.path.read_bytes()[:7] == b"NIST_1A"
    assert sf.info(str(u.path)).samplerate == 16000
    wav = dd.load_utterance_audio(u)
    assert abs(len(wav) / 16000 - u.segments[-1][1]) < 0.01  # the last h# ends at the end of the audio
    assert all(p in dd.TIMIT_39 for uu in utts for _, _, p in uu.segments)


def test_miniature_speech_commands(downstream):
    utts = dd.read_speech_commands(downstream / "speech_commands")
    assert len(dd.label_map(utts)) == 35
    assert "_background_noise_" not in {u.label for u in utts}
    val_list = (downstream / "speech_commands" / "validation_list.txt").read_text().split()
    val = {f"{u.label}/{u.path.name}" for u in utts if u.split == "val"}
    assert val == set(val_list)
    speakers = {s: {u.speaker for u in utts if u.split == s} for s in dd.SPLITS}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["val"] & speakers["test"])


def test_speech_commands_files_listed_but_absent_are_an_error(downstream, tmp_path):
    from conftest import link_tree
    listed = (downstream / "speech_commands" / "testing_list.txt").read_text().split()[0]
    root = link_tree(downstream / "speech_commands", tmp_path / "sc", without=(listed,))
    with pytest.raises(DataError, match=rf"1 file\(s\) listed in .* are missing: {listed} \(an incomplete download\?\)"):
        dd.read_speech_commands(root)
    (root / "validation_list.txt").unlink()  # a link into the shared miniature: replaced, not written through
    (root / "validation_list.txt").write_bytes(b"bed/x_nohash_0.wav\n\xfe\n")
    with pytest.raises(DataError, match=r"validation_list.txt: expected UTF-8 .* found byte 0xfe at offset 19"):
        dd.read_speech_commands(root)
    shutil.copy(downstream / "speech_commands" / "validation_list.txt", root / "validation_list.txt")
    word = listed.split("/")[0]  # a run on the other words does not need that word's files
    others = tuple(w for w in dd.SPEECH_COMMANDS_35 if w != word)
    assert {u.label for u in dd.read_speech_commands(root, words=others)} == set(others)


def test_the_folder_above_a_dataset_points_to_the_dataset_below_it(downstream):
    # the miniature's root given for one of its datasets: each reader names the sub-folder that holds its layout
    for read, sub, marker in ((dd.read_timit, "timit", "TRAIN"), (dd.read_crema_d, "crema_d", "AudioWAV"),
                              (dd.read_speech_commands, "speech_commands", "validation_list.txt"),
                              (dd.read_slurp, "slurp", "dataset/slurp"), (dd.read_words, "words", "words.tsv")):
        with pytest.raises(DataError, match=rf"^{re.escape(str(downstream))}: .*; "
                                            rf"{re.escape(str(downstream / sub))} holds {marker}: pass that folder$"):
            read(downstream)
    with pytest.raises(DataError, match=r"\(CREMA-D layout\)$"):
        dd.read_crema_d(downstream / "slurp")  # nothing below it holds the layout: no hint


def test_speech_commands_under_torchaudios_download_root_is_pointed_to(downstream, tmp_path):
    from conftest import link_tree
    inner = link_tree(downstream / "speech_commands", tmp_path / "data" / "SpeechCommands" / "speech_commands_v0.02")
    with pytest.raises(DataError, match=rf"data: missing validation_list.txt \(Speech Commands v0.02 layout\); "
                                        rf"{re.escape(str(inner))} holds it \(torchaudio's download layout\)"):
        dd.read_speech_commands(tmp_path / "data")
    assert len(dd.read_speech_commands(inner)) == len(dd.read_speech_commands(downstream / "speech_commands"))
    with pytest.raises(DataError, match=r"missing validation_list.txt \(Speech Commands v0.02 layout\)$"):
        dd.read_speech_commands(tmp_path)  # nothing below it: no hint


def test_speech_commands_v001_is_named_as_such(downstream, tmp_path):
    from conftest import link_tree
    v1 = [f"speech_commands/{w}" for w in dd.SPEECH_COMMANDS_V2_ONLY]
    files = [str(p.relative_to(downstream)) for w in v1 for p in (downstream / w).iterdir()]
    root = link_tree(downstream, tmp_path / "d", without=tuple(files))
    for w in v1:
        (root / w).rmdir()
    with pytest.raises(DataError, match=r"word folders missing: \['backward', .*'visual'\] .*looks like v0.01"):
        dd.read_speech_commands(root / "speech_commands")
    (root / "speech_commands" / "learn").mkdir()  # another gap than v0.01's: no version claimed
    with pytest.raises(DataError, match=r"word folders missing: \['backward', 'follow', 'forward', 'visual'\] \(found [^)]*\)$"):
        dd.read_speech_commands(root / "speech_commands")


def test_miniature_crema_d_split_by_actor(downstream):
    utts = dd.read_crema_d(downstream / "crema_d")
    assert set(dd.label_map(utts)) == set(dd.CREMA_EMOTIONS)
    actors = {s: {u.speaker for u in utts if u.split == s} for s in dd.SPLITS}
    assert all(actors.values()) and not (actors["train"] & actors["test"]) and not (actors["val"] & actors["test"])
    bad = downstream / "crema_bad" / "AudioWAV"
    bad.mkdir(parents=True)
    (bad / "1001_IEO_XXX_HI.wav").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{bad / '1001_IEO_XXX_HI.wav'}: expected")):  # the whole path
        dd.read_crema_d(bad.parent)
    (bad / "1001_IEO_XXX_HI.wav").unlink()
    with pytest.raises(DataError, match=r"AudioWAV: no .wav files \(expected AudioWAV/<actor>_.*\)$"):
        dd.read_crema_d(bad.parent)
    (bad / "training").mkdir()
    (bad / "training" / "1001_IEO_ANG_HI.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"AudioWAV: no .wav files .*found them in sub-folders \['training'\]: put "):
        dd.read_crema_d(bad.parent)


def test_macos_appledouble_files_are_not_read_as_recordings(downstream, tmp_path):
    from conftest import link_tree
    root = link_tree(downstream, tmp_path / "d")
    for wav in [p for p in root.rglob("*") if p.suffix.lower() == ".wav"]:  # a copy through macOS leaves these
        (wav.parent / f"._{wav.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    assert len(list(root.rglob("._*.wav"))) + len(list(root.rglob("._*.WAV"))) > 20
    for name, read in (("timit", dd.read_timit), ("speech_commands", dd.read_speech_commands),
                       ("crema_d", dd.read_crema_d)):
        assert [u.path.name for u in read(root / name)] == [u.path.name for u in read(downstream / name)], name
    assert list(dd.read_aligned_words(root / "words_in_carriers")) == [
        str(root / "words_in_carriers" / Path(k).name) for k in dd.read_aligned_words(downstream / "words_in_carriers")]


def test_miniature_slurp_one_label_map(downstream):
    utts = dd.read_slurp(downstream / "slurp")
    classes = dd.label_map(utts)
    assert {u.split for u in utts} == set(dd.SPLITS)
    # one map over all splits: every intent occurs in every split, so indices mean the same in train and test
    assert len(classes) == 6
    assert all({u.label for u in utts if u.split == s} == set(classes) for s in dd.SPLITS)
    rec = json.loads((downstream / "slurp" / "dataset" / "slurp" / "test.jsonl").read_text().splitlines()[0])
    assert rec["intent"] == f"{rec['scenario']}_{rec['action']}"
    assert all(u.path.suffix == ".flac" and u.path.is_file() for u in utts)
    actions = dd.read_slurp(downstream / "slurp", label="action")
    assert {u.label for u in actions} <= {"set", "query", "music", "hue_lightoff"}


def test_label_map_indices_follow_the_sorted_names_whatever_the_order_met():
    names = [f"intent_{c}" for c in "zyxwvutsrqponmlkjihgfedcba"]
    utts = [dd.Utterance(Path(f"{n}.wav"), "train", n, "s") for n in names]
    utts.append(dd.Utterance(Path("timit.wav"), "train", None, "s"))  # a segment task's utterance: no label
    assert dd.label_map(utts) == {n: i for i, n in enumerate(sorted(names))}


def test_slurp_and_words_readers_name_the_bad_line(tmp_path):
    folder = tmp_path / "slurp" / "dataset" / "slurp"
    folder.mkdir(parents=True)
    good = {"slurp_id": 7, "intent": "alarm_set", "recordings": [{"file": "a.flac"}]}
    for name in ("train", "devel", "test"):
        (folder / f"{name}.jsonl").write_text(json.dumps(good) + "\n")
    with pytest.raises(DataError, match=r"no SLURP audio folder \(expected one of .*slurp_real, .*audio/slurp_real, "
                                        r".*scripts/audio/slurp_real\)"):
        dd.read_slurp(tmp_path / "slurp")
    (tmp_path / "slurp" / "scripts" / "audio" / "slurp_real").mkdir(parents=True)  # download script run in scripts/
    in_scripts = tmp_path / "slurp/scripts/audio/slurp_real/a.flac"
    assert [u.path for u in dd.read_slurp(tmp_path / "slurp")] == [in_scripts] * 3
    (tmp_path / "slurp" / "audio" / "slurp_real").mkdir(parents=True)  # ... and in the repository's root
    assert [u.path for u in dd.read_slurp(tmp_path / "slurp")] == [tmp_path / "slurp/audio/slurp_real/a.flac"] * 3
    (tmp_path / "slurp" / "slurp_real").mkdir()
    assert [u.path for u in dd.read_slurp(tmp_path / "slurp")] == [tmp_path / "slurp/slurp_real/a.flac"] * 3
    cases = [("\n" + json.dumps(good) + "\n{oops", "devel.jsonl, line 3: not a JSON record"),
             (json.dumps({"slurp_id": 1, "recordings": []}), r"devel.jsonl, line 1: no 'intent' or 'recordings' field "
                                                              r"\(found \['recordings', 'slurp_id'\]\)"),
             ("[1]", r"devel.jsonl, line 1: no 'intent' or 'recordings' field \(found list\)"),
             (json.dumps({**good, "recordings": [{"wer": 0}]}), r"devel.jsonl, line 1: a recording without a 'file' "
                                                               r"field \(found \{'wer': 0\}\)")]
    for text, message in cases:
        (folder / "devel.jsonl").write_text(text)
        with pytest.raises(DataError, match=message):
            dd.read_slurp(tmp_path / "slurp")
    (folder / "devel.jsonl").write_bytes(json.dumps(good).encode() + b"\n\xff\n")  # damaged: the file and the byte
    with pytest.raises(DataError, match=r"devel.jsonl: expected UTF-8 .* found byte 0xff at offset \d+"):
        dd.read_slurp(tmp_path / "slurp")
    words = tmp_path / "words"
    words.mkdir()
    with pytest.raises(DataError, match=rf"^{re.escape(str(words))}: no words.tsv \(the miniature word-dataset layout"):
        dd.read_words(words)
    (words / "words.tsv").write_text("")
    with pytest.raises(DataError, match="words.tsv: expected header .*, found an empty file"):
        dd.read_words(words)
    header = "file\tword\tcategory\tsplit\tspeaker\n"
    cases = [("a.wav\tbear\tanimal\tdev\tv1\n", r"line 2: expected 5 non-empty tab-separated fields with split in"),
             ("a.wav\tbear\t\ttrain\tv1\n", r"line 2: expected 5 non-empty .* found \['a.wav', 'bear', '', "),
             # the probe holds out words: one heard in training and scored in test would not be unseen
             ("a.wav\tbear\tanimal\ttrain\tv1\nb.wav\tbear\tanimal\ttest\tv2\n",
              r"line 3: word 'bear' in split 'test', but in 'train' on line 2"),
             ("a.wav\tbear\tanimal\ttrain\tv1\n# a comment\nb.wav\tbear\tplant\ttrain\tv2\n",
              r"line 4: word 'bear' in category 'plant', but in 'animal' on line 2")]
    for rows, message in cases:
        (words / "words.tsv").write_text(header + rows)
        with pytest.raises(DataError, match=message):
            dd.read_words(words)
    # as a spreadsheet saves it: a byte-order mark, CRLF, a space after a cell
    (words / "words.tsv").write_bytes(("\ufeff" + header + "a.wav\tbear\tanimal \ttrain\tv1\n"
                                       "b.wav\tbear\tanimal\ttrain\tv2\n").replace("\n", "\r\n").encode())
    assert [(u.label, u.split, u.words[0][2]) for u in dd.read_words(words)] == [("animal", "train", "bear")] * 2


def test_miniature_words_split_by_word(downstream):
    utts = dd.read_words(downstream / "words")
    words = {s: {u.words[0][2] for u in utts if u.split == s} for s in dd.SPLITS}
    assert not (words["train"] & words["test"]) and not (words["train"] & words["val"])
    assert len(dd.label_map(utts)) == 8
    assert {u.label for u in utts if u.split == "test"} == set(dd.label_map(utts))  # every category in test


def test_miniature_words_in_carriers_hold_every_word_once_per_sentence(downstream):
    from make_demo_data import VOCABULARY
    aligned = dd.read_aligned_words(downstream / "words_in_carriers")
    assert len(aligned) == 2 * len(VOCABULARY)  # tiny preset: two carrier sentences
    for path, words in aligned.items():
        content = [w for _, _, w in words if w in VOCABULARY]
        assert content == [Path(path).stem.rsplit("_c", 1)[0]]  # the file's own word, and no other content word
        assert all(0 <= a < b for a, b, _ in words) and words[-1][1] <= dd.load_wav_16k(Path(path)).size / 16000 + 1e-3


def test_aligned_reader_errors(tmp_path):
    with pytest.raises(DataError, match="no .wav files"):
        dd.read_aligned_words(tmp_path)
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"a.wav: no matching alignment a.TextGrid"):
        dd.read_aligned_words(tmp_path)


def test_held_out_speakers_are_those_with_the_smallest_crc32_whatever_the_order():
    import zlib
    speakers = ["FAKS0", "FDAC1", "FELC0", "MDAB0", "MJSW0", "MREB0", "MTAS1", "FJEM0", "MWBT0", "FCJF0"]
    by_crc = sorted(speakers, key=lambda s: zlib.crc32(s.encode()))
    assert dd.held_out_speakers(speakers, 0.3) == set(by_crc[:3])
    assert dd.held_out_speakers(speakers[::-1] + speakers[:2], 0.3) == set(by_crc[:3])  # order, repeats: same
    assert set(by_crc[:3]) != set(sorted(speakers)[:3])  # not the alphabetical first (all female: F... ids)
    assert len(dd.held_out_speakers(speakers, 0.01)) == 1  # at least one


def test_timit_sa_sentences_can_be_left_out_and_a_reversed_segment_is_an_error(tmp_path):
    spk = _hand_timit(tmp_path)
    for folder in (spk, tmp_path / "TEST" / "DR1" / "FXYZ1"):  # an SA sentence beside each SX one
        for suffix in ("phn", "wrd", "wav"):
            (folder / f"sa1.{suffix}").write_bytes((folder / f"sx101.{suffix}").read_bytes())
    assert sorted(u.label for u in dd.read_timit(tmp_path)) == ["SA", "SA", "SX", "SX"]
    assert sorted(u.label for u in dd.read_timit(tmp_path, include_sa=False)) == ["SX", "SX"]
    (spk / "sx101.phn").write_text("0 1600 h#\n2400 1600 ix\n")
    with pytest.raises(DataError, match=r"sx101.phn, line 2: end sample 1600 before start sample 2400"):
        dd.read_timit(tmp_path)
    (spk / "sx101.phn").write_text("0 1600 h#\n1600 1600 ix\n")  # a zero-length segment labels no frame: kept
    assert [(u.segments[1]) for u in dd.read_timit(tmp_path) if u.speaker == "MABC0" and u.label == "SX"] == [
        (0.1, 0.1, "ih")]


def test_speech_commands_speaker_is_the_file_name_before_nohash(downstream):
    utts = dd.read_speech_commands(downstream / "speech_commands")
    assert all(u.speaker == u.path.name.split("_nohash_")[0] and "_nohash_" in u.path.name for u in utts)
    by_speaker = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    assert max(map(len, by_speaker.values())) > 1  # a speaker's recordings share one id (held out together)


def test_crema_d_needs_an_actor_for_each_split(tmp_path):
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: no AudioWAV/ folder \(CREMA-D layout\)"):
        dd.read_crema_d(tmp_path)
    folder = tmp_path / "AudioWAV"
    folder.mkdir()
    for actor in ("1001", "1002"):
        (folder / f"{actor}_IEO_ANG_HI.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"AudioWAV: 2 actors, too few for an actor-level train/val/test split"):
        dd.read_crema_d(tmp_path)
    (folder / "1003_IEO_SAD_LO.wav").write_bytes(b"")
    assert [(u.speaker, u.split) for u in dd.read_crema_d(tmp_path)] == [("1001", "train"), ("1002", "val"),
                                                                          ("1003", "test")]


def test_slurp_devel_file_is_the_validation_split(tmp_path):
    folder = tmp_path / "dataset" / "slurp"
    folder.mkdir(parents=True)
    (tmp_path / "slurp_real").mkdir()
    for name in ("train", "devel", "test"):
        (folder / f"{name}.jsonl").write_text(json.dumps({"slurp_id": 1, "intent": "alarm_set",
                                                          "recordings": [{"file": f"{name}.flac"}]}) + "\n")
    assert {u.path.name: u.split for u in dd.read_slurp(tmp_path)} == {"train.flac": "train", "devel.flac": "val",
                                                                       "test.flac": "test"}
    elsewhere = tmp_path / "flac"  # --audio-dir: the recordings wherever they are
    assert {u.path for u in dd.read_slurp(tmp_path, audio_dir=elsewhere)} == {elsewhere / f"{name}.flac" for name in
                                                                              ("train", "devel", "test")}
    (folder / "devel.jsonl").unlink()
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: missing dataset/slurp/devel.jsonl \(SLURP"):
        dd.read_slurp(tmp_path)


def test_check_splits_names_an_empty_split(tmp_path):
    utts = [dd.Utterance(tmp_path / f"{i}.wav", split, "a", "s") for i, split in enumerate(("train", "test", "train"))]
    with pytest.raises(DataError, match=r"timit: split\(s\) \['val'\] hold no utterance \(counts \{'train': 2, "
                                        r"'val': 0, 'test': 1\}\)"):
        dd.check_splits(utts, "timit")
    assert dd.check_splits(utts + [dd.Utterance(tmp_path / "v.wav", "val", "a", "s")], "timit") == {
        "train": 2, "val": 1, "test": 1}


def test_utterance_samples_counts_16_khz_samples_of_audio_at_any_rate(tmp_path):
    import numpy as np
    import soundfile as sf
    for rate, n in ((16000, 12345), (8000, 4000), (44100, 44100)):
        path = tmp_path / f"{rate}.wav"
        sf.write(path, np.zeros(n, np.float32), rate)
        assert dd.utterance_samples(dd.Utterance(path, "train", "a", "s")) == pytest.approx(n * 16000 / rate, abs=1)
