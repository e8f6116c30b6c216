"""The miniature downstream datasets hold the real layouts' invariants (TIMIT, Speech Commands, CREMA-D, the word sets)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import downstream_data as dd
import make_downstream_data as mdd
from make_demo_data import CATEGORIES, NEAR_HOMOPHONES, VOCABULARY


def test_speaker_voices_spread_pitch_evenly_and_shuffle_the_rates():
    voices = mdd._speaker_voices(5, np.random.default_rng(3))
    pitches, rates = zip(*voices)
    assert list(pitches) == [25, 37, 50, 62, 75]  # low to high over espeak's 0-99
    assert sorted(rates) == [140, 155, 170, 185, 200] and list(rates) != sorted(rates)  # pitch does not set the rate


def test_sphere_file_holds_the_16_bit_samples_after_a_1024_byte_header(tmp_path):
    wav = (0.5 * np.sin(np.arange(4000) / 7)).astype(np.float32)
    mdd.write_sphere(tmp_path / "SX1.WAV", wav, "SX1")
    raw = (tmp_path / "SX1.WAV").read_bytes()
    assert raw[:16] == b"NIST_1A\n   1024\n" and len(raw) == 1024 + 2 * len(wav)
    header = raw[:1024].split(b"end_head")[0].decode()
    assert "sample_count -i 4000" in header and "sample_rate -i 16000" in header and "utterance_id -s3 SX1" in header
    # read as libsndfile reads TIMIT: the header's byte order and size decide what the samples are
    samples, rate = sf.read(str(tmp_path / "SX1.WAV"), dtype="int16")
    assert rate == 16000 and np.array_equal(samples, np.round(wav * 32767).astype(np.int16))
    assert f"sample_max -i {samples.max()}" in header and f"sample_min -i {samples.min()}" in header


def test_timit_phn_tiles_each_recording_from_h_sharp_to_h_sharp(downstream):
    """As in the LDC release: .PHN segments abut from sample 0 to the last one, h# at both ends and nowhere else
    (a gap inside would be pau; espeak's phones abut); .WRD words are bare lower-case words inside the audio; .TXT
    spans the audio."""
    phn_files = sorted((downstream / "timit").rglob("*.PHN"))
    assert len(phn_files) == 7 * 7  # tiny preset: 5 + 2 speakers, SA1-2, 3 SX, 2 SI each
    speakers = {top: len(list((downstream / "timit" / top).glob("DR*/*"))) for top in ("TRAIN", "TEST")}
    assert speakers == {"TRAIN": 5, "TEST": 2}
    for phn in phn_files:
        n_samples = sf.info(str(phn.with_suffix(".WAV"))).frames
        rows = [line.split() for line in phn.read_text().splitlines()]
        starts, ends, labels = [int(r[0]) for r in rows], [int(r[1]) for r in rows], [r[2] for r in rows]
        assert starts[0] == 0 and ends[-1] == n_samples and starts[1:] == ends[:-1], phn
        assert labels[0] == labels[-1] == "h#" and "h#" not in labels[1:-1], phn
        words = [line.split() for line in phn.with_suffix(".WRD").read_text().splitlines()]
        assert all(re.fullmatch(r"[a-z']+", w) and 0 < int(a) < int(b) < n_samples for a, b, w in words), phn
        assert phn.with_suffix(".TXT").read_text().startswith(f"0 {n_samples} ")


def test_speech_commands_clips_are_one_second_of_16_bit_16_khz_mono(downstream):
    clips = sorted((downstream / "speech_commands").glob("*/*_nohash_0.wav"))
    assert len(clips) == 35 * 3  # tiny preset: 3 speakers
    for clip in clips:
        info = sf.info(str(clip))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 16000, 1, "PCM_16"), clip


def test_a_speech_command_is_placed_whole_in_its_one_second_clip_and_a_longer_one_cut_to_a_second(tmp_path):
    from speech_synth import Utterance
    lengths = {w: 4000 + 100 * i for i, w in enumerate(dd.SPEECH_COMMANDS_35)}
    lengths["learn"] = 20000  # longer than a clip

    class Synth:  # the word's "speech": a ramp of its length at 16 kHz
        def synthesize(self, word):
            return Utterance(audio=np.linspace(0.1, 0.5, lengths[word], dtype=np.float32), words=[], phones=[],
                             sample_rate=16000)
    mdd.write_speech_commands(tmp_path, lambda pitch, wpm: Synth(), np.random.default_rng(0), 3)
    for word, n in lengths.items():
        for clip in (tmp_path / word).glob("*.wav"):
            audio = sf.read(str(clip), dtype="float32")[0]
            spoken = np.flatnonzero(audio)
            assert len(audio) == 16000 and len(spoken) == min(n, 16000), clip
            assert np.all(np.diff(spoken) == 1), clip  # one piece: the word, silence around it


def test_slurp_train_split_has_two_sentences_per_intent_devel_and_test_one(downstream):
    counts = {}
    for split in ("train", "devel", "test"):
        for line in (downstream / "slurp" / "dataset" / "slurp" / f"{split}.jsonl").read_text().splitlines():
            intent = json.loads(line)["intent"]
            counts.setdefault(intent, []).append(split)
    assert len(counts) == len(mdd.SLURP_INTENTS)
    assert all(sorted(splits) == ["devel", "test", "train", "train"] for splits in counts.values())


def test_crema_d_emotions_are_acted_in_loudness_as_well_as_pitch_and_rate(downstream):
    peaks = {}
    for path in (downstream / "crema_d" / "AudioWAV").glob("*.wav"):
        actor, sentence, emotion, level = path.stem.split("_")
        assert level == ("XX" if emotion == "NEU" else "HI")
        peaks.setdefault(emotion, []).append(np.abs(sf.read(str(path))[0]).max())
    assert sorted(peaks) == sorted(dd.CREMA_EMOTIONS) and len({len(p) for p in peaks.values()}) == 1
    for emotion, (_, _, gain) in mdd.EMOTION_PROSODY.items():
        assert np.allclose(peaks[emotion], gain, atol=1e-4), emotion  # each file peaks at its emotion's gain


def test_word_set_holds_out_whole_words_eight_two_two_per_category(downstream):
    utts = dd.read_words(downstream / "words")
    for category, words in CATEGORIES.items():
        split_words = {s: {u.words[0][2] for u in utts if u.split == s and u.label == category} for s in dd.SPLITS}
        assert [len(split_words[s]) for s in dd.SPLITS] == [8, 2, 2], category
        assert set().union(*split_words.values()) == set(words.split())
    assert sorted(u.words[0][2] for u in utts) == sorted(list(VOCABULARY) * 2)  # tiny preset: 2 speakers per word


@pytest.mark.parametrize("seed", range(12))
def test_semantic_pairs_link_near_homophones_across_categories_and_synonyms_within_one(seed, tmp_path):
    mdd.write_miniature_pairs(tmp_path / "pairs.tsv", np.random.default_rng(seed))  # what write_words writes
    rows = [line.split("\t") for line in (tmp_path / "pairs.tsv").read_text().splitlines()
            if not line.startswith("#")][1:]
    homophones = [(a, b) for a, b, relation in rows if relation == "near_homophone"]
    synonyms = [(a, b) for a, b, relation in rows if relation == "synonym"]
    assert homophones == list(NEAR_HOMOPHONES) and len(synonyms) == 2 * len(homophones)
    assert all(VOCABULARY[a] != VOCABULARY[b] for a, b in homophones)
    assert all(a != b and VOCABULARY[a] == VOCABULARY[b] for a, b in synonyms)
    assert [a for a, _ in synonyms] == [w for pair in homophones for w in pair]  # one synonym per homophone word


def test_words_in_carriers_textgrids_put_the_words_tier_first_as_aligners_write_them(downstream):
    from textgrid_utils import read_textgrid
    grids = sorted((downstream / "words_in_carriers").glob("*.TextGrid"))
    assert len(grids) == 2 * len(VOCABULARY)
    assert {tuple(t.name for t in read_textgrid(g)) for g in grids} == {("words", "phones")}


def test_a_seed_draws_other_data_and_the_same_seed_the_same_bytes(downstream, tmp_path):
    import json
    again = mdd.build(tmp_path / "again", seed=0, size="tiny", quiet=True)
    other = mdd.build(tmp_path / "other", seed=1, size="tiny", quiet=True)

    def files(root: Path) -> dict:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "build.json"}
    built = sorted(d.name for d in again.iterdir() if d.is_dir())  # other tests add folders to the shared fixture
    assert built == ["crema_d", "slurp", "speech_commands", "timit", "words", "words_in_carriers"]
    for name in built:
        assert files(again / name) == files(downstream / name), name
    assert json.loads((other / "build.json").read_text())["seed"] == 1
    assert (other / "words" / "words.tsv").read_text() != (downstream / "words" / "words.tsv").read_text()


def test_a_word_missing_from_the_carrier_alignments_stops_the_build_and_nothing_is_written(tmp_path, monkeypatch):
    write = mdd.write_words_in_carriers

    def losing_one(out, *args):
        write(out, *args)
        for suffix in (".wav", ".TextGrid"):
            for k in range(2):
                (out / f"bear_c{k}{suffix}").unlink()
    monkeypatch.setattr(mdd, "write_words_in_carriers", losing_one)
    with pytest.raises(AssertionError, match=r"words_in_carriers: words missing from the alignments: \['bear'\]"):
        mdd.build(tmp_path / "ds", seed=0, size="tiny", quiet=True)
    assert not (tmp_path / "ds").exists()
