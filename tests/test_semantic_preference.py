"""Semantic preference: the formula on hand-built spaces, pair files, and the CLI on the miniature stories."""
import zlib

import numpy as np
import pytest

from data_utils import DataError
from make_demo_data import CATEGORIES, NEAR_HOMOPHONES, VOCABULARY
from semantic_preference import (ENGLISH_PAIRS, context_label_counts, read_pairs, semantic_preference,
                                 word_occurrences)


def _pairs():
    pairs = [(a, b, "near_homophone") for a, b in NEAR_HOMOPHONES]
    for a, _ in NEAR_HOMOPHONES:
        mate = [w for w in CATEGORIES[VOCABULARY[a]].split() if w != a][0]
        pairs.append((a, mate, "synonym"))
    return pairs


def _sound_vector(word, dim=64):
    # letters stand in for phones: near-homophones share most of them
    v = np.zeros(dim)
    for i in range(len(word) - 1):
        v[zlib.crc32(word[i:i + 2].encode()) % dim] += 1.0
    return v


def test_meaning_space_prefers_synonyms_and_sound_space_homophones():
    cats = sorted(CATEGORIES)
    meaning, sound = {}, {}
    for w, c in VOCABULARY.items():
        onehot = np.eye(len(cats))[cats.index(c)]
        r = np.random.default_rng(zlib.crc32(w.encode()))
        meaning[w] = np.stack([onehot * 3 + r.normal(0, 0.5, len(cats))] * 2)          # 2 "layers"
        s = _sound_vector(w, 8)
        sound[w] = np.stack([s + r.normal(0, 0.1, 8)] * 2)
    m = semantic_preference(meaning, _pairs())
    s = semantic_preference(sound, _pairs())
    assert all(p > 0.3 for p in m["preference"]) and all(p < 0 for p in s["preference"])
    assert m["n_pairs"] == {"synonym": 10, "near_homophone": 10}
    # the preference is exactly the difference of the two mean cosines
    np.testing.assert_allclose(m["preference"], np.array(m["synonym"]) - np.array(m["near_homophone"]))
    # cosine of identical vectors is 1
    same = semantic_preference({"a": np.ones((1, 3)), "b": np.ones((1, 3)), "c": -np.ones((1, 3))},
                               [("a", "b", "synonym"), ("a", "c", "near_homophone")])
    assert same["synonym"] == pytest.approx([1.0]) and same["near_homophone"] == pytest.approx([-1.0])


def test_random_pairs_are_of_two_different_words():
    # orthogonal words: every pair of two different words has cosine 0; a word paired with itself would add 1s
    embeddings = {w: np.eye(6)[i][None] for i, w in enumerate("abcdef")}
    result = semantic_preference(embeddings, [("a", "b", "synonym"), ("c", "d", "near_homophone")], n_random=500)
    assert result["random"] == [0.0]


def test_preference_per_layer_by_hand_and_random_pairs_by_seed():
    # layer 0: synonyms parallel (cosine 1 at norms 1 and 2), homophones parallel; layer 1: synonyms orthogonal,
    # homophones at 45 degrees (norms 1.4 and 1)
    emb = {"a": np.array([[1.0, 0.0], [1.0, 0.0]]), "b": np.array([[2.0, 0.0], [0.0, 3.0]]),
           "c": np.array([[0.0, 1.0], [1.0, 1.0]]), "d": np.array([[0.0, 5.0], [1.0, 0.0]])}
    result = semantic_preference(emb, [("a", "b", "synonym"), ("c", "d", "near_homophone")], n_random=50)
    np.testing.assert_allclose(result["synonym"], [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(result["near_homophone"], [1.0, np.sqrt(0.5)], atol=1e-9)
    np.testing.assert_allclose(result["preference"], [0.0, -np.sqrt(0.5)], atol=1e-9)
    rng = np.random.default_rng(0)
    many = {f"w{i}": rng.standard_normal((1, 4)) for i in range(12)}
    pairs = [("w0", "w1", "synonym"), ("w2", "w3", "near_homophone")]
    assert semantic_preference(many, pairs, n_random=20, seed=1)["random"] == (
        semantic_preference(many, pairs, n_random=20, seed=1)["random"])
    assert semantic_preference(many, pairs, n_random=20, seed=1)["random"] != (
        semantic_preference(many, pairs, n_random=20, seed=2)["random"])  # the seed draws the pairs


def test_pairs_files(tmp_path):
    pairs = read_pairs(ENGLISH_PAIRS)
    assert {r for _, _, r in pairs} == {"synonym", "near_homophone"} and len(pairs) >= 40
    bad = tmp_path / "p.tsv"
    bad.write_text("word1\tword2\trelation\nbig\tlarge\tantonym\n")
    with pytest.raises(DataError, match="p.tsv, line 2: "):
        read_pairs(bad)
    # the line number is the file's, comments and blank lines counted (an editor's line 5, not the 2nd pair)
    bad.write_text("# pairs\nword1\tword2\trelation\nbig\tlarge\tsynonym\n\nbig\tsmall\tantonym\n")
    with pytest.raises(DataError, match="p.tsv, line 5: .* found \\['big', 'small', 'antonym'\\]"):
        read_pairs(bad)
    # as a spreadsheet saves it: a byte-order mark, Windows line ends, a space after a cell
    upper = tmp_path / "upper.tsv"  # words are matched lower-case, as the corpus words are
    upper.write_text("word1\tword2\trelation\nBig\tLARGE\tsynonym\n")
    assert read_pairs(upper) == [("big", "large", "synonym")]
    excel = tmp_path / "excel.tsv"
    excel.write_bytes("word1\tword2\trelation\r\nbig \tlarge\tsynonym \r\n".encode("utf-8-sig"))
    assert read_pairs(excel) == [("big", "large", "synonym")]
    with pytest.raises(DataError, match="no \\['synonym'\\] pair"):
        semantic_preference({"a": np.ones((1, 2)), "b": np.ones((1, 2))}, [("a", "b", "near_homophone"),
                                                                          ("a", "zzz", "synonym")])


def test_word_occurrences_caps_and_filters():
    words = {"s1": [(0, 1, "Bear"), (1, 2, "the"), (2, 3, "bear")], "s2": [(0, 1, "bear"), (1, 2, "pear")]}
    occ = word_occurrences(words, {"bear", "pear"}, max_per_word=2)
    assert occ == {"bear": [("s1", 0, 1), ("s1", 2, 3)], "pear": [("s2", 1, 2)]}


def test_context_label_counts_by_hand():
    # s1: bear at 0.0-0.4, rice 1.0-1.4, "the" 1.5-1.6, pear 2.0-2.4, bear 4.5-5.0; s2: pear alone
    words = {"s1": [(0.0, 0.4, "bear"), (1.0, 1.4, "Rice"), (1.5, 1.6, "the"), (2.0, 2.4, "pear"), (4.5, 5.0, "bear")],
             "s2": [(0.0, 0.3, "pear")]}
    label_of = {"bear": "animal", "pear": "food", "rice": "food"}
    classes = {"animal": 0, "food": 1}
    occ = word_occurrences(words, set(label_of), max_per_word=5)
    counts = context_label_counts(words, occ, label_of, classes, context_s=2.0)
    # rows: bear@0 (nothing before), bear@4.5 (window 2.5-4.5: pear ends at 2.4, outside), pear@2.0 (window 0-2:
    # bear ends at 0.4 > 0, rice), pear in s2 (nothing), rice@1.0 (bear)
    np.testing.assert_array_equal(counts, [[0, 0], [0, 0], [1, 1], [0, 0], [1, 0]])
    # two words of one category in the window count twice
    two = {"s3": [(0.0, 0.4, "pear"), (0.5, 0.9, "rice"), (1.0, 1.4, "bear")]}
    np.testing.assert_array_equal(context_label_counts(two, {"bear": [("s3", 1.0, 1.4)]}, label_of, classes, 2.0),
                                  [[0, 2]])
    # a word overlapping the window's start counts; the occurrence itself never does
    np.testing.assert_array_equal(context_label_counts(words, {"bear": [("s1", 4.5, 5.0)]}, label_of, classes, 2.2),
                                  [[0, 1]])
    assert context_label_counts(words, {}, label_of, classes).shape == (0, 2)


def _encoder_and_first_story(mini_root, tiny_models):
    """A tiny wav2vec2 encoder, the miniature and its first story."""
    import data_utils as du
    import models
    backbone, extractor, model_type = models.load_backbone(tiny_models["wav2vec2"])
    data = du.Ds003020(mini_root)
    return models.SpeechEncoder(backbone, extractor, model_type), data, sorted(data.respdict)[0]


def test_word_embeddings_are_the_mean_of_occurrence_features(mini_root, tiny_models):
    from semantic_preference import occurrence_features, word_embeddings
    encoder, data, story = _encoder_and_first_story(mini_root, tiny_models)
    w = data.words(story)
    occ = word_occurrences({story: list(zip(w.starts.tolist(), w.ends.tolist(), w.labels))}, {"the", "and"}, 3)
    audio = {story: data.audio(story)}
    words, feats = occurrence_features(encoder, audio, occ, [1, 2], progress=False)
    assert words == sorted(words) and len(words) == sum(len(o) for o in occ.values()) and feats.shape[:2] == (2, len(words))
    emb = word_embeddings(encoder, audio, occ, [1, 2], progress=False)
    for word in occ:
        sel = [i for i, x in enumerate(words) if x == word]
        np.testing.assert_allclose(emb[word], feats[:, sel].mean(axis=1), rtol=1e-6)
    assert not np.allclose(feats[:, 0], feats[:, 1])  # different occurrences, different vectors


def test_a_word_segment_past_its_audio_is_an_error_before_extraction(mini_root, tiny_models):
    from semantic_preference import occurrence_features
    encoder, data, story = _encoder_and_first_story(mini_root, tiny_models)
    audio = data.audio(story)
    end_s = len(audio) / 16000
    occ = {"late": [(story, end_s - 0.5, end_s + 0.01)], "word": [(story, 1.0, 1.3)]}  # within the slack
    assert occurrence_features(encoder, {story: audio}, occ, [1], progress=False)[1].shape[1] == 2
    occ["late"] = [(story, end_s - 0.5, end_s + 1.0)]  # the TextGrid of a longer recording
    with pytest.raises(DataError, match=rf"{story}: its time alignment \(word segments\) ends at {end_s + 1:.3f} s"):
        occurrence_features(encoder, {story: audio}, occ, [1], progress=False)


def test_each_occurrence_is_heard_with_the_context_before_it(mini_root, tiny_models, monkeypatch):
    import semantic_preference as sp
    encoder, data, story = _encoder_and_first_story(mini_root, tiny_models)
    heard, real = [], sp.frame_features_together

    def recording(encoders, wav, *args, **kwargs):
        heard.append(len(wav))
        return real(encoders, wav, *args, **kwargs)
    monkeypatch.setattr(sp, "frame_features_together", recording)
    occ = {"early": [(story, 1.0, 1.5)], "late": [(story, 10.0, 10.25)]}
    sp.occurrence_features(encoder, {story: data.audio(story)}, occ, [1], context_s=3.0, progress=False)
    assert heard == [int(1.5 * 16000), int(3.25 * 16000)]  # from the audio's start; from 3 s before the word
    segments, mean = [], sp.segment_mean

    def recording_segment(times, states, start_s, end_s):
        segments.append((round(start_s, 6), round(end_s, 6)))
        return mean(times, states, start_s, end_s)
    monkeypatch.setattr(sp, "segment_mean", recording_segment)
    sp.occurrence_features(encoder, {story: data.audio(story)}, occ, [1], context_s=3.0, progress=False)
    assert segments == [(1.0, 1.5), (3.0, 3.25)]  # the word's frames, in the clip's own time


def test_a_word_shorter_than_the_front_ends_first_frame_is_widened_not_a_crash(mini_root, tiny_models):
    from features import MIN_WINDOW_SAMPLES as n
    from semantic_preference import occurrence_features, segment_samples
    assert segment_samples(2.0, 2.5, 1.0, 160000) == (16000, 40000)  # a word and its second of context
    assert segment_samples(2.0, 2.01, 0.0, 160000) == (32160 - n, 32160)  # widened back to n samples
    assert segment_samples(0.0, 0.005, 0.0, 160000) == (0, n)  # at the audio's start: widened forward
    assert segment_samples(0.0, 0.005, 0.0, 300) == (0, 300)  # never past the audio
    encoder, data, story = _encoder_and_first_story(mini_root, tiny_models)
    occ = {"brief": [(story, 2.0, 2.01)], "first": [(story, 0.0, 0.005)]}  # 10 ms and 5 ms, no context
    words, feats = occurrence_features(encoder, {story: data.audio(story)}, occ, [1], context_s=0.0, progress=False)
    assert words == ["brief", "first"] and feats.shape[:2] == (1, 2) and np.isfinite(feats).all()


def test_word_segments_longer_than_whisper_takes_are_named_by_context_before_extraction(mini_root, tiny_models,
                                                                                        monkeypatch):
    import data_utils as du
    import models
    import semantic_preference
    backbone, extractor, model_type = models.load_backbone(tiny_models["whisper"])
    encoder = models.SpeechEncoder(backbone, extractor, model_type, "truncate")
    data = du.Ds003020(mini_root)
    story = sorted(data.respdict)[0]
    occ = {"late": [(story, 35.0, 35.5)], "early": [(story, 1.0, 1.2)]}
    monkeypatch.setattr(semantic_preference, "map_inference", lambda *a, **k: pytest.fail("extraction started"))
    with pytest.raises(models.ModelError, match=r"word segments \(each word with --context 40 s of audio before it\) "
                                                r"reach 35.5 s, more than the 30 s Whisper takes; lower --context"):
        semantic_preference.occurrence_features(encoder, {story: data.audio(story)}, occ, [1], context_s=40.0,
                                                progress=False)
