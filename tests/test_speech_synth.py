"""Tests of speech_synth: espeak-ng driven through ctypes gives reproducible speech with exact timings."""
import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
from speech_synth import EspeakSynthesizer, espeak_phone_to_arpabet  # noqa: E402

TEXT = "my sister likes the rain. the horse was next to the house."


def test_same_text_gives_identical_speech_whatever_was_synthesised_before():
    # libespeak-ng keeps state in C statics: without a fresh library per utterance the second call below
    # came out a few samples shorter and differed from sample 66 on.
    synth = EspeakSynthesizer()
    first = synth.synthesize(TEXT)
    EspeakSynthesizer(words_per_minute=140, pitch=80).synthesize("something else entirely, said slowly.")
    again = synth.synthesize(TEXT)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.words == again.words and first.phones == again.phones


def test_utterance_timings_cover_the_audio_in_order():
    utt = EspeakSynthesizer().synthesize(TEXT)
    assert utt.sample_rate == 22050 and utt.audio.dtype == np.float32
    # the second sentence's first word is reported by espeak at the space before it; it keeps its label
    assert [w for _, _, w in utt.words] == TEXT.replace(".", "").split()
    duration = len(utt.audio) / utt.sample_rate
    for items in (utt.words, utt.phones):
        starts, ends = np.array([s for s, _, _ in items]), np.array([e for _, e, _ in items])
        assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1] - 1e-9) and ends[-1] <= duration + 1e-9
    # espeak's word events fall a few ms inside a boundary phone, so test each phone's midpoint, not its ends
    assert all(any(ws <= (ps + pe) / 2 <= we for ws, we, _ in utt.words) for ps, pe, _ in utt.phones)
    assert {p for _, _, p in utt.phones} >= {"M", "S", "R", "HH"}


def test_a_slower_rate_gives_longer_speech_and_unknown_voice_is_named():
    fast = EspeakSynthesizer(words_per_minute=220).synthesize(TEXT)
    slow = EspeakSynthesizer(words_per_minute=120).synthesize(TEXT)
    assert len(slow.audio) > 1.4 * len(fast.audio)
    with pytest.raises(RuntimeError, match="no voice 'xx-nonexistent'"):
        EspeakSynthesizer(voice="xx-nonexistent").synthesize(TEXT)


def test_espeak_mnemonics_map_to_arpabet():
    from speech_synth import ESPEAK_TO_ARPABET
    from textgrid_utils import ARPABET_PHONES
    assert set(ESPEAK_TO_ARPABET.values()) <= ARPABET_PHONES  # the miniature's phone tiers pass the TextGrid check
    assert all(espeak_phone_to_arpabet(p) is None for p in ("_", "_:", "_!", "_^_", "||", "|", "", "'"))  # pauses
    assert espeak_phone_to_arpabet("s") == "S" and espeak_phone_to_arpabet("tS") == "CH"   # consonants: no digit
    assert espeak_phone_to_arpabet("'a") == "AE1" and espeak_phone_to_arpabet("@") == "AH0"  # stress marks


def test_stress_marks_and_unknown_mnemonics():
    assert espeak_phone_to_arpabet(",a") == "AE1"  # secondary stress counts as stressed
    assert espeak_phone_to_arpabet("%a") == "AE0" and espeak_phone_to_arpabet("=I") == "IH0"  # marks stripped
    assert espeak_phone_to_arpabet("tX") == "T" and espeak_phone_to_arpabet("'aX") == "AE1"  # by its first character
    assert espeak_phone_to_arpabet("Q") == "AH0"  # nothing known: a schwa


def test_events_become_word_and_phone_intervals_by_hand():
    from speech_synth import _EVENT_END, _EVENT_PHONEME, _EVENT_WORD, _events_to_alignment
    W, P, END = _EVENT_WORD, _EVENT_PHONEME, _EVENT_END
    events = [(W, 1, 2, 0, ""), (P, 0, 0, 0, "h"), (P, 0, 0, 100, "'aI"), (P, 0, 0, 200, "_"),  # "hi", a pause
              (W, 4, 5, 300, ""), (P, 0, 0, 300, "D"), (P, 0, 0, 300, "'e@"),  # one time, two phones: one kept
              (P, 0, 0, 400, "r"), (END, 0, 0, 450, ""),  # the sentence ends before the audio does
              (P, 0, 0, 650, "s"), (END, 0, 0, 700, "")]  # after the audio's end: dropped
    got = _events_to_alignment(events, b"hi there", duration=0.6)
    # of phones at one time the last in (time, name) order is kept: "D" sorts after "'e@"
    assert got["phones"] == [(0.0, 0.1, "HH"), (0.1, 0.2, "AY1"), (0.3, 0.4, "DH"), (0.4, 0.45, "R")]
    assert got["words"] == [(0.0, 0.2, "hi"), (0.3, 0.45, "there")]
    # a word with no phone event of its own lasts until the next word, not until an earlier word's last phone
    events = [(W, 1, 1, 0, ""), (P, 0, 0, 0, "'a"), (P, 0, 0, 50, "_"), (W, 3, 1, 100, ""), (W, 5, 1, 200, ""),
              (P, 0, 0, 200, "s"), (END, 0, 0, 300, "")]
    got = _events_to_alignment(events, b"a b c", duration=0.3)
    assert got["phones"] == [(0.0, 0.05, "AE1"), (0.2, 0.3, "S")]
    assert got["words"] == [(0.0, 0.05, "a"), (0.1, 0.2, "b"), (0.2, 0.3, "c")]
