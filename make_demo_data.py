"""Generate the miniature Moth Radio Hour dataset: the ds003020 layout with real speech and planted signal.

    python make_demo_data.py --out data/miniature [--seed 0] [--size demo|tiny]

Writes `OUT/ds003020/` (stimuli, respdict, TextGrids, responses, one subject missing `life`, and an
`english1000sm.hf5` word embedding in the real file's layout, (985, words), with the words of a category near
each other), Box pickles in `OUT/box/`, noise ceilings in `OUT/subject_NCs/`, ROI files in `OUT/rois/` and
the generating truth in `OUT/ground_truth/` (with `word_categories.tsv` for `eval_downstream.py --task
story_word_category`).
Stories are English sentences over 96 content words in 8 semantic categories (the category of a word is
not audible), spoken by espeak-ng. Simulated voxels: "auditory" ones follow mel-band
energies, "language" ones the categories of recently heard words, "mixed" both, "noise" nothing; through
an FIR haemodynamic response over delays 1–4 TRs, with AR(1) noise at log-uniform SNRs. Every layout
invariant of SPEC-data.md is asserted after writing (the tree is built in a temp folder and renamed).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from atomic_io import replace_dir, write_json_atomic
from eval_utils import lanczosinterp2d, make_delayed, zscore
from low_level import mel_band_energy
from run_utils import EXIT_USAGE, check_replaceable, creation_record, nonnegative_int, positive_float
from textgrid_utils import format_textgrid
from timing import DEFAULT_TR, AlignmentError, check_audio_duration, simulated_tr_grid, trim_slice

CATEGORIES = {
    "animal": "bear mouse deer snail horse rabbit tiger monkey eagle turtle dolphin spider",
    "food": "pear rice bread cheese apple butter carrot soup honey pasta lemon cookie",
    "family": "wife son bride mother father sister brother uncle cousin grandmother daughter nephew",
    "place": "house land city village garden market church school harbor forest museum station",
    "weather": "rain sun ice snow storm cloud thunder fog wind frost lightning drizzle",
    "body": "brain hand elbow finger shoulder knee stomach ankle spine lung tooth skin",
    "tool": "knife nail hammer shovel wrench ladder needle drill scissors chisel rope bucket",
    "emotion": "fear pride anger joy sorrow envy guilt shame delight panic grief comfort",
}
CATEGORY_NAMES = list(CATEGORIES)
VOCABULARY = {w: c for c, words in CATEGORIES.items() for w in words.split()}
# Cross-category pairs that sound alike (for the semantic-preference analysis on the miniature).
NEAR_HOMOPHONES = [("bear", "pear"), ("mouse", "house"), ("deer", "fear"), ("snail", "nail"), ("rice", "ice"),
                   ("wife", "knife"), ("son", "sun"), ("bride", "pride"), ("hand", "land"), ("brain", "rain")]
TEMPLATES = [
    "the {0} was next to the {1}.", "i remember the {0} and the {1}.", "she talked about the {0}, the {1} and the {2}.",
    "we found a {0} by the {1}.", "there was a {0} in the {1} with the {2}.", "my {0} never liked the {1}.",
    "then the {0} came with a {1}, a {2} and a {3}.", "he thought about the {0} all day.", "nobody expected the {0}.",
    "after the {0} we saw the {1}.", "it was about the {0} and the {1} and the {2}.", "they brought the {0} to the {1}.",
]


@dataclass(frozen=True)
class SizePreset:
    """Story lengths (respdict values) and simulation sizes of one miniature flavour."""
    train_resp: tuple
    val_resp: tuple
    test_resp: int
    n_repeats: int
    voxels: dict


# ~43 min of audio: 12 train stories (~160 s each), 2 validation, 1 test (~320 s) with 5 repeats. Until
# 2026-12-02 the demo had the first 6 of these train stories (tuned for 2 epochs; now 12 for 1 epoch: about the same
# steps at batch 16, lower validation loss in every seed, docs/demo_record.md); they are still drawn first (see build).
_SIX = (90, 92, 88, 91, 89, 90)
_DEMO = SizePreset(train_resp=_SIX * 2, val_resp=(90, 88), test_resp=170, n_repeats=5,
                   voxels={"UTS01": 400, "UTS02": 330, "UTS04": 260})
SIZES = {
    "demo": _DEMO,
    # for scaling experiments beyond the demo budget (`run_demo.py --size large`): all 24 train stories,
    # ~75 min of audio, 2x the demo's tuning data; everything else as the demo.
    "large": replace(_DEMO, train_resp=_SIX * 4),
    # for the tests: ~7 min of audio.
    "tiny": SizePreset(train_resp=(40, 42, 38), val_resp=(38, 36), test_resp=80, n_repeats=3,
                       voxels={"UTS01": 120, "UTS02": 96, "UTS04": 72}),
}
from data_utils import TEST_STORY, TRAIN_STORIES, VAL_STORIES  # noqa: E402  (after the tables it reads like a spec)

SUBJECT_MISSING = {"UTS04": "life"}           # as in the real data
CORE_TRAIN_STORIES = len(_SIX)                # drawn before the validation and test stories (see build)
EXTRA_STORY_STREAM = 99                       # seed key of the further training stories (subjects use 1-8)
EMBEDDING_STREAM = 98                         # seed key of the word embedding
EMBEDDING_DIMS = 985                          # as english1000sm.hf5
SHORT_FORMAT_STORY = VAL_STORIES[0]           # one TextGrid in Praat's short format
CHRONOLOGICAL_FORMAT_STORY = VAL_STORIES[1]   # one in its chronological format; the others in the long one
MONO_STORY = TRAIN_STORIES[1]                 # one 44.1 kHz mono wav; the others are stereo
VOXEL_TYPES = ("auditory", "language", "mixed", "noise")
VOXEL_FRACTIONS = (0.30, 0.35, 0.10, 0.25)
HRF = np.array([0.5, 1.0, 0.7, 0.3])          # weights of delays 1..4 TRs
SNR_RANGE = (0.001, 1.5)                      # signal/noise variance ratio, log-uniform
AR_RHO = 0.3


# ----------------------------------------------------------------------------------------------- text
def function_words() -> list[str]:
    """The templates' words (every word of a story that is not a content word)."""
    return sorted({w for t in TEMPLATES for w in re.findall(r"[a-z]+", re.sub(r"\{\d\}", " ", t))})


def write_word_embedding(path: Path, rng) -> None:
    """`english1000sm.hf5` of the miniature: "data" (985, W) float64, "vocab" (W,) bytes, over every story word.

    A content word's vector is its category's prototype plus a word's own part of half its size; a function
    word's is such a part alone: meaning (the category) is linear in the vectors, as the language voxels' is.
    """
    prototypes = rng.standard_normal((len(CATEGORY_NAMES), EMBEDDING_DIMS))
    vocab = sorted(VOCABULARY) + function_words()
    own = 0.5 * rng.standard_normal((len(vocab), EMBEDDING_DIMS))
    shared = [prototypes[CATEGORY_NAMES.index(VOCABULARY[w])] if w in VOCABULARY else np.zeros(EMBEDDING_DIMS)
              for w in vocab]
    vectors = np.array(shared) + own
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=vectors.T)
        f.create_dataset("vocab", data=np.array([w.encode() for w in vocab]))


def word_categories_tsv() -> str:
    """The vocabulary's categories as `eval_downstream.py --word-labels` reads them (header word, label)."""
    return "word\tlabel\n" + "".join(f"{w}\t{c}\n" for w, c in VOCABULARY.items())


def story_text(rng: np.random.Generator, n_sentences: int) -> list[tuple[str, list[str]]]:
    """Sentences with their content words; slot categories follow a slowly drifting topic mixture."""
    logits = rng.normal(0, 1, len(CATEGORY_NAMES))
    sentences = []
    for _ in range(n_sentences):
        logits = 0.8 * logits + rng.normal(0, 0.9, len(CATEGORY_NAMES))  # drifts over ~5 sentences (~15 s)
        p = np.exp(1.5 * logits)
        p /= p.sum()
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        n_slots = template.count("{")
        words = [rng.choice(CATEGORIES[CATEGORY_NAMES[rng.choice(len(p), p=p)]].split()) for _ in range(n_slots)]
        sentences.append((template.format(*words), list(words)))
    return sentences


def story_audio_seconds(respdict_value: int) -> float:
    """Length of a story's audio in seconds: `2·respdict − 20`, ds003020's (its nominal TR is 2 s)."""
    return 2.0 * respdict_value - 20.0


def tr_problem(size: str, tr: float) -> str | None:
    """Why a miniature of `size` cannot have TR grids of `tr` seconds (None when it can): its stories' audio
    keeps ds003020's length, which must cover each grid's last response TR and not outlast the grid 1.5 times."""
    preset = SIZES[size]
    lengths = {**dict(zip(TRAIN_STORIES, preset.train_resp)), **dict(zip(VAL_STORIES, preset.val_resp)),
               TEST_STORY: preset.test_resp}
    for story, resp in lengths.items():
        try:
            check_audio_duration(simulated_tr_grid(resp, tr), story_audio_seconds(resp), story)
        except AlignmentError as err:
            return (f"--tr {tr:g} does not fit the {size} miniature, whose audio lasts 2·respdict − 20 s as "
                    f"ds003020's does (TR {DEFAULT_TR:g} s by default): {err}")
    return None


def synthesize_story(synth, rng, respdict_value: int) -> dict:
    """Speak sentences until the story fills `2·respdict − 20` s; returns 22.05 kHz audio and alignments."""
    target_s = story_audio_seconds(respdict_value)
    rate = synth.sample_rate
    audio, words, phones, t = [], [], [], 0.5
    audio.append(np.zeros(int(0.5 * rate), np.float32))
    while True:
        (text, _), = story_text(rng, 1)
        utt = synth.synthesize(text)
        pause = float(rng.uniform(0.25, 0.6))
        if t + len(utt.audio) / rate + 0.2 > target_s:
            break
        words += [(t + a, t + b, w.strip(".,").lower()) for a, b, w in utt.words]
        phones += [(t + a, t + b, p) for a, b, p in utt.phones]
        audio += [utt.audio, np.zeros(int(pause * rate), np.float32)]
        t += len(utt.audio) / rate + pause
    wav = np.concatenate(audio)
    n_target = int(round(target_s * rate))
    wav = np.pad(wav, (0, max(0, n_target - len(wav))))[:n_target]
    return {"audio": wav, "rate": rate, "words": words, "phones": phones, "duration": target_s}


# ----------------------------------------------------------------------------------------------- features
def semantic_features(words: list[tuple], tr_times: np.ndarray) -> np.ndarray:
    """(n_tr, 8) category indicators of content words at their midpoints, Lanczos-downsampled to TRs."""
    onehots = np.zeros((len(words), len(CATEGORY_NAMES)))
    for i, (_, _, w) in enumerate(words):
        if w in VOCABULARY:
            onehots[i, CATEGORY_NAMES.index(VOCABULARY[w])] = 1.0
    times = np.array([(a + b) / 2 for a, b, _ in words])
    return lanczosinterp2d(onehots, times, tr_times)


def acoustic_features(wav16k: np.ndarray, tr_times: np.ndarray) -> np.ndarray:
    """(n_tr, 8) mel-band log energies (10 ms frames) relative to the story's mean (its overall
    loudness is no feature), Lanczos-downsampled to TRs."""
    times, energy = mel_band_energy(wav16k, 16000, n_bands=8)
    return lanczosinterp2d(energy - energy.mean(axis=0), times, tr_times)


# ----------------------------------------------------------------------------------------------- subjects
def simulate_subject(rng, n_voxels: int, stories: dict, n_repeats: int, test_story: str) -> dict:
    """Voxel responses of one subject for all stories (TR grid rows, before trimming) plus its truth.

    `stories[s]` holds per-TR "semantic" and "acoustic" (n_tr, 8) features. Returns per story the
    noiseless signal (n_tr, V), and the truth (types, snr, weights).
    """
    counts = np.floor(np.array(VOXEL_FRACTIONS) * n_voxels).astype(int)
    counts[-1] = n_voxels - counts[:-1].sum()
    types = np.repeat(np.arange(len(VOXEL_TYPES)), counts)
    rng.shuffle(types)
    w_sem = rng.normal(0, 1, (8, n_voxels)) * np.isin(types, [1, 2])
    w_ac = rng.normal(0, 1, (8, n_voxels)) * np.isin(types, [0, 2])
    w_sem -= w_sem.mean(axis=0)  # centred mixtures: a voxel prefers some categories over others
    signal = {}
    for name, feats in stories.items():
        sem = make_delayed(zscore(feats["semantic"]), (1, 2, 3, 4)).reshape(-1, 4, 8)
        ac = make_delayed(zscore(feats["acoustic"]), (1, 2, 3, 4)).reshape(-1, 4, 8)
        signal[name] = np.einsum("tdf,d,fv->tv", sem, HRF, w_sem) + np.einsum("tdf,d,fv->tv", ac, HRF, w_ac)
    scale = np.concatenate(list(signal.values())).std(axis=0)
    scale[scale == 0] = 1.0
    snr = np.exp(rng.uniform(np.log(SNR_RANGE[0]), np.log(SNR_RANGE[1]), n_voxels)) * (types != 3)
    responses = {}
    for name, sig in signal.items():
        clean = sig / scale * np.sqrt(snr)
        n_rep = n_repeats if name == test_story else 1
        responses[name] = np.stack([clean + ar1_noise(rng, clean.shape, AR_RHO) for _ in range(n_rep)])
    return {"responses": responses, "types": types, "snr": snr, "w_sem": w_sem, "w_ac": w_ac}


def ar1_noise(rng, shape, rho: float) -> np.ndarray:
    """Unit-variance AR(1) noise along axis 0 of `shape` (T, V)."""
    e = rng.normal(0, 1, shape)
    out = np.empty(shape)
    out[0] = e[0]
    for t in range(1, shape[0]):
        out[t] = rho * out[t - 1] + math.sqrt(1 - rho ** 2) * e[t]
    return out


# ----------------------------------------------------------------------------------------------- writing
def write_wav(path: Path, wav: np.ndarray, rate: int, stereo: bool, title: str) -> None:
    """Write int16 PCM at 44.1 kHz; the INFO chunk makes the header longer than 44 bytes, as in the real files."""
    import soundfile as sf
    import soxr
    out = soxr.resample(wav, rate, 44100).astype(np.float32)
    out = np.clip(out / (np.abs(out).max() + 1e-9) * 0.8, -1, 1)
    data = np.stack([out, 0.9 * out], axis=1) if stereo else out
    with sf.SoundFile(str(path), "w", samplerate=44100, channels=2 if stereo else 1, subtype="PCM_16",
                      format="WAV") as f:
        f.title = title
        f.write(data)


def write_box_pickles(folder: Path, textgrid_texts: dict, respdict: dict, tr: float) -> None:
    """Write grids_huge.jbl / trfiles_huge.jbl with classes under the Huth-lab module paths."""
    import types as _types

    import joblib

    modules = {}
    try:
        for modname, clsname in (("ridge_utils.textgrid", "TextGrid"), ("huth.stimulus_utils", "TRFile")):
            for part in (modname.split(".")[0], modname):
                modules.setdefault(part, sys.modules.get(part))
                sys.modules.setdefault(part, _types.ModuleType(part))
            cls = type(clsname, (), {"__module__": modname})
            setattr(sys.modules[modname], clsname, cls)
        TextGrid = sys.modules["ridge_utils.textgrid"].TextGrid
        TRFile = sys.modules["huth.stimulus_utils"].TRFile
        grids, trfiles = {}, {}
        for story, text in textgrid_texts.items():
            g = TextGrid()
            g.read_file = text
            grids[story] = g
            f = TRFile()
            clock = 1000.0 + 37.0 * len(trfiles)  # absolute scanner clock: must not matter
            n_tr = respdict[story] - 5
            f.soundstarttime = clock + 10.0
            f.soundstoptime = clock + 10.0 + 2.0 * respdict[story] - 20.0
            f.trtimes = clock + np.arange(n_tr) * tr
            f.otherlabels = []
            f.expectedtr = tr
            trfiles[story] = [f]
        joblib.dump(grids, folder / "grids_huge.jbl")
        joblib.dump(trfiles, folder / "trfiles_huge.jbl")
    finally:
        for part, old in modules.items():
            if old is None:
                sys.modules.pop(part, None)


def story_plan(preset: SizePreset) -> tuple[dict[str, int], set[str]]:
    """Story -> TRs of simulated responses, in the order the stories are synthesised, and the further training
    stories among them.

    The first CORE_TRAIN_STORIES, the validation and the test story draw from the seed's stream in this order;
    further training stories come after them from a stream of their own (their text then depends on the seed
    alone), so a preset with more training stories keeps the others' text, and their noise.
    """
    n_core = min(CORE_TRAIN_STORIES, len(preset.train_resp))
    plan = dict(zip(TRAIN_STORIES[:n_core], preset.train_resp[:n_core]))
    plan.update(zip(VAL_STORIES, preset.val_resp))
    plan[TEST_STORY] = preset.test_resp
    extra = dict(zip(TRAIN_STORIES[n_core:len(preset.train_resp)], preset.train_resp[n_core:]))
    plan.update(extra)
    return plan, set(extra)


def write_subject_responses(folder: Path, subject: str, responses: dict[str, np.ndarray]) -> None:
    """One subject's `<story>.hf5` files as ds003020 holds them: "data" (TRs, voxels), the z-scored mean of the
    repeats on the TR grid's rows [10:-5]; the test story also "individual_repeats" (repeats, TRs, voxels).

    responses : story -> (repeats, TRs of the grid, voxels) simulated responses; SUBJECT_MISSING's story is skipped.
    """
    folder.mkdir()
    for story, resp in responses.items():
        if SUBJECT_MISSING.get(subject) == story:
            continue
        rows = resp[:, trim_slice(resp.shape[1])]          # TR grid rows [10:-5]
        reps = zscore(rows, axis=1)
        with h5py.File(folder / f"{story}.hf5", "w") as f:
            data = zscore(reps.mean(axis=0))
            if story == TRAIN_STORIES[0] and subject == "UTS01":
                data[:, 0] = np.nan  # real files hold NaN voxels; loaders must turn them into 0
            f.create_dataset("data", data=data.astype(np.float64))
            if story == TEST_STORY:
                f.create_dataset("individual_repeats", data=reps.astype(np.float32))


def subject_rois(types: np.ndarray, subject: str) -> dict:
    """The ROI file of a simulated subject (lists of voxel indices): auditory and language voxels by their simulated
    type (mixed voxels in both), and the two hemispheres (the voxel order follows the mask: left half first)."""
    n_vox, half = len(types), len(types) // 2
    return {"auditory": np.flatnonzero(np.isin(types, ["auditory", "mixed"])).tolist(),
            "language": np.flatnonzero(np.isin(types, ["language", "mixed"])).tolist(),
            "left_hemisphere": list(range(half)), "right_hemisphere": list(range(half, n_vox)),
            "_note": "miniature ROIs: auditory = voxels driven by band energies, language = by word categories",
            "_subject": subject}


def build(out: Path, seed: int = 0, size: str = "demo", tr: float = DEFAULT_TR, quiet: bool = False) -> Path:
    """Build the miniature under `out` (replacing an older one atomically). Returns `out/ds003020`."""
    from compute_noise_ceiling import subject_noise_ceiling
    from data_utils import Ds003020, summarize
    from speech_synth import EspeakSynthesizer
    from tqdm import tqdm

    preset = SIZES[size]
    if len(preset.train_resp) > len(TRAIN_STORIES):  # zip() below would silently drop the extra stories
        raise ValueError(f"size preset {size!r}: expected at most {len(TRAIN_STORIES)} train stories (the ds003020 "
                         f"list), found {len(preset.train_resp)}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    check_replaceable(out, ("ground_truth",), "miniature dataset")  # only ours has it (a real download: ds003020/)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    root = tmp / "ds003020"
    for d in ("stimuli", "derivative/TextGrids", "derivative/preprocessed_data"):
        (root / d).mkdir(parents=True)
    plan, extra = story_plan(preset)
    extra_rng = np.random.default_rng([seed, EXTRA_STORY_STREAM])
    synth = EspeakSynthesizer(words_per_minute=170)

    respdict, tg_texts, feats = {}, {}, {}
    for story, resp in tqdm(plan.items(), desc="synthesising stories", disable=quiet):
        s = synthesize_story(synth, extra_rng if story in extra else rng, resp)
        respdict[story] = resp
        write_wav(root / "stimuli" / f"{story}.wav", s["audio"], s["rate"], stereo=story != MONO_STORY, title=story)
        style = {SHORT_FORMAT_STORY: "short", CHRONOLOGICAL_FORMAT_STORY: "chronological"}.get(story, "long")
        tg_texts[story] = format_textgrid({"phone": s["phones"], "word": s["words"]}, s["duration"], style=style)
        (root / "derivative" / "TextGrids" / f"{story}.TextGrid").write_text(tg_texts[story], encoding="utf-8")
        import soxr
        wav16 = soxr.resample(s["audio"], s["rate"], 16000)
        grid = simulated_tr_grid(resp, tr)
        feats[story] = {"semantic": semantic_features(s["words"], grid.tr_times),
                        "acoustic": acoustic_features(wav16, grid.tr_times)}
    (root / "derivative" / "respdict.json").write_text(json.dumps(respdict, indent=1))
    write_word_embedding(root / "derivative" / "english1000sm.hf5", np.random.default_rng([seed, EMBEDDING_STREAM]))

    truth_dir = tmp / "ground_truth"
    truth_dir.mkdir()
    (truth_dir / "vocabulary.json").write_text(json.dumps(
        {"categories": CATEGORY_NAMES, "word_category": VOCABULARY, "near_homophones": NEAR_HOMOPHONES}, indent=1))
    # the same truth as eval_downstream.py --word-labels reads it
    (truth_dir / "word_categories.tsv").write_text(word_categories_tsv())
    np.savez(truth_dir / "features.npz", **{f"{s}/{k}": v for s, d in feats.items() for k, v in d.items()})
    (tmp / "rois").mkdir()
    for subj, n_vox in preset.voxels.items():
        sub_rng = np.random.default_rng([seed, int(subj[3:])])
        sim = simulate_subject(sub_rng, n_vox, feats, preset.n_repeats, TEST_STORY)
        write_subject_responses(root / "derivative" / "preprocessed_data" / subj, subj, sim["responses"])
        types = np.array(VOXEL_TYPES)[sim["types"]]
        (tmp / "rois" / f"{subj}.json").write_text(json.dumps(subject_rois(types, subj)))
        np.savez(truth_dir / f"{subj}.npz", types=types, snr=sim["snr"], w_sem=sim["w_sem"], w_ac=sim["w_ac"])

    box = tmp / "box"
    box.mkdir()
    write_box_pickles(box, tg_texts, respdict, tr)

    data = Ds003020(root, tr=tr)
    (tmp / "subject_NCs").mkdir()
    for subj in preset.voxels:
        np.save(tmp / "subject_NCs" / f"{subj}.npy", subject_noise_ceiling(data, subj))
    check_miniature(tmp, preset)
    summary, problems = summarize(data)
    if problems:
        raise AssertionError(f"generated miniature fails its own validation: {problems[0]}")
    # what made it: the seed and size decide every byte, the espeak-ng wheel the speech
    write_json_atomic(tmp / "build.json", creation_record({"dataset": "miniature ds003020", "seed": seed,
                                                           "size": size, "tr": tr}))
    replace_dir(tmp, out)
    return out / "ds003020"


def check_miniature(tmp: Path, preset: SizePreset) -> None:
    """Assert the layout invariants SPEC-data.md asks of the miniature."""
    import soundfile as sf
    root = tmp / "ds003020"
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    assert respdict[TEST_STORY] >= 65, "test story too short for the [40:] evaluation trim"
    assert min(respdict.values()) >= 36, "a story shorter than respdict 36"
    for story, n in respdict.items():
        info = sf.info(str(root / "stimuli" / f"{story}.wav"))
        assert info.samplerate == 44100, (story, info.samplerate)
        assert abs(info.duration - story_audio_seconds(n)) < 0.05, (story, info.duration, story_audio_seconds(n))
    assert sf.info(str(root / "stimuli" / f"{TEST_STORY}.wav")).channels == 2
    assert sf.info(str(root / "stimuli" / f"{MONO_STORY}.wav")).channels == 1
    with open(root / "stimuli" / f"{TEST_STORY}.wav", "rb") as f:
        head = f.read(4096)
    assert head.find(b"data") > 36, "WAV header unexpectedly minimal"
    with h5py.File(root / "derivative" / "english1000sm.hf5", "r") as f:
        vocab = {w.decode() for w in f["vocab"][:]}
        assert f["data"].shape == (EMBEDDING_DIMS, len(vocab)), f["data"].shape
    from data_utils import Ds003020
    data = Ds003020(root)
    for story in respdict:
        assert set(data.words(story).labels) <= vocab, f"{story}: words outside the embedding"
    short = (root / "derivative" / "TextGrids" / f"{SHORT_FORMAT_STORY}.TextGrid").read_text()
    assert "xmin =" not in short and "intervals [" not in short, "short-format TextGrid missing"
    chronological = (root / "derivative" / "TextGrids" / f"{CHRONOLOGICAL_FORMAT_STORY}.TextGrid").read_text()
    assert chronological.startswith('"Praat chronological'), "chronological TextGrid missing"
    voxel_counts = []
    for subj, n_vox in preset.voxels.items():
        folder = root / "derivative" / "preprocessed_data" / subj
        have = {p.stem for p in folder.glob("*.hf5")}
        assert have == set(respdict) - {SUBJECT_MISSING.get(subj)}, (subj, have)
        for story in have:
            with h5py.File(folder / f"{story}.hf5", "r") as f:
                assert f["data"].shape == (respdict[story] - 20, n_vox), (subj, story, f["data"].shape)
                if story == TEST_STORY:
                    assert f["individual_repeats"].shape == (preset.n_repeats, respdict[story] - 20, n_vox)
        nc = np.load(tmp / "subject_NCs" / f"{subj}.npy")
        assert nc.shape == (n_vox,) and nc.dtype == np.float64 and (nc >= 0).all() and (nc < 1).all()
        voxel_counts.append(n_vox)
    assert len(set(voxel_counts)) == len(voxel_counts), "subjects must differ in voxel count"
    assert (tmp / "box" / "grids_huge.jbl").is_file() and (tmp / "box" / "trfiles_huge.jbl").is_file()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the miniature ds003020 dataset with planted signal.")
    parser.add_argument("--out", required=True, help="output folder (OUT/ds003020 is the dataset root)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the speech, voxels and noise "
                                                                          "(default 0; a seed builds bit-identically)")
    parser.add_argument("--size", choices=sorted(SIZES), default="demo",
                        help="demo (make demo's), large (all 24 training stories) or tiny (the tests') (default demo)")
    parser.add_argument("--tr", type=positive_float, default=DEFAULT_TR,
                        help=f"repetition time in seconds of the simulated scans (default {DEFAULT_TR})")
    args = parser.parse_args(argv)
    problem = tr_problem(args.size, args.tr)
    if problem:
        parser.error(problem)
    try:
        root = build(Path(args.out), seed=args.seed, size=args.size, tr=args.tr)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"miniature written: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
