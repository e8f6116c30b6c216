"""Write miniature versions of the downstream datasets, in their real layouts, from synthesised speech.

    python make_downstream_data.py --out data/downstream [--seed 0] [--size demo|tiny]

TIMIT (NIST SPHERE .WAV, .PHN/.WRD sample offsets, .TXT; SA/SI/SX), Speech Commands v0.02 (35 word folders,
list files, `_background_noise_`), CREMA-D (AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav), SLURP (jsonl +
slurp_real/*.flac) and the toolkit's own `words/` set (the miniature's 96 content words in a carrier phrase,
label = semantic category, split by word) with `semantic_pairs.tsv`, and `words_in_carriers/` (each content
word ending neutral sentences, `<name>.wav` + `<name>.TextGrid`, for `story_word_category --corpus aligned`).
"Speakers" are espeak-ng voices at different pitches and rates; CREMA-D emotions are acted through pitch, rate
and loudness. Each reader of `downstream_data.py` is run on the result before the tree is moved into place.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from atomic_io import replace_dir, write_json_atomic
from downstream_data import CREMA_EMOTIONS, SPEECH_COMMANDS_35
from make_demo_data import CATEGORIES, NEAR_HOMOPHONES, VOCABULARY, word_categories_tsv
from run_utils import EXIT_USAGE, check_replaceable, creation_record, nonnegative_int

RATE = 16000
SIZES = {"demo": {"timit_speakers": (10, 4), "sc_speakers": 6, "crema_actors": 10, "slurp_speakers": 4,
                  "word_speakers": 3, "carriers": 3},
         "tiny": {"timit_speakers": (5, 2), "sc_speakers": 3, "crema_actors": 5, "slurp_speakers": 3,
                  "word_speakers": 2, "carriers": 2}}
TIMIT_SA = ("she had your dark suit in greasy wash water all year", "don't ask me to carry an oily rag like that")
TIMIT_SX = ("the bright sun warmed the old stone wall", "a big dog ran across the wet field",
            "we need more paper for the printer", "the children played in the garden after lunch",
            "please close the window before the rain starts", "he drove the truck along the narrow road")
SI_WORDS = ("red green cold warm river mountain teacher doctor window table morning evening quickly slowly "
            "bought found lost carried music letter story number").split()
# CREMA-D's twelve sentences (codes as in the real file names).
CREMA_SENTENCES = {"IEO": "it's eleven o'clock", "TIE": "that is exactly what happened", "IOM": "i'm on my way to the meeting",
                   "IWW": "i wonder what this is about", "TAI": "the airplane is almost full", "MTI": "maybe tomorrow it will be cold"}
# (pitch offset, rate factor, gain) per emotion: emotions are prosody in the miniature.
EMOTION_PROSODY = {"ANG": (10, 1.25, 1.0), "DIS": (-8, 0.85, 0.6), "FEA": (22, 1.35, 0.7), "HAP": (18, 1.1, 0.9),
                   "NEU": (0, 1.0, 0.6), "SAD": (-15, 0.7, 0.35)}
SLURP_INTENTS = {
    ("alarm", "set"): ["wake me up at {t}", "set an alarm for {t}", "i need an alarm at {t}"],
    ("alarm", "query"): ["what alarms do i have", "is my alarm set for {t}", "show me my alarms"],
    ("weather", "query"): ["what is the weather like today", "will it rain tomorrow", "is it cold outside"],
    ("play", "music"): ["play some jazz", "put on my favourite song", "play music by the beatles"],
    ("calendar", "set"): ["add a meeting at {t}", "remind me about lunch at {t}", "schedule a call at {t}"],
    ("iot", "hue_lightoff"): ["turn off the lights", "switch the bedroom lights off", "lights off please"],
}
SLURP_TIMES = ("seven am", "six thirty", "noon", "nine pm", "ten o'clock")


def _speaker_voices(n: int, rng) -> list[tuple[int, int]]:
    """(pitch, words per minute) per speaker: spread over the range, shuffled."""
    pitches = np.linspace(25, 75, n).astype(int)
    rates = rng.permutation(np.linspace(140, 200, n).astype(int))
    return list(zip(pitches.tolist(), rates.tolist()))


def _to16k(utt) -> np.ndarray:
    import soxr
    return soxr.resample(utt.audio, utt.sample_rate, RATE).astype(np.float32)


def write_sphere(path: Path, wav: np.ndarray, utterance_id: str) -> None:
    """16-bit little-endian NIST SPHERE file with a 1024-byte header, as TIMIT's .WAV."""
    pcm = np.clip(np.round(wav * 32767), -32768, 32767).astype("<i2")
    fields = ["NIST_1A", "   1024", "database_id -s5 TIMIT", "database_version -s3 1.0",
              f"utterance_id -s{len(utterance_id)} {utterance_id}", "channel_count -i 1", f"sample_count -i {len(pcm)}",
              f"sample_rate -i {RATE}", f"sample_min -i {int(pcm.min())}", f"sample_max -i {int(pcm.max())}",
              "sample_n_bytes -i 2", "sample_byte_format -s2 01", "sample_sig_bits -i 16", "end_head"]
    header = ("\n".join(fields) + "\n").encode("ascii")
    path.write_bytes(header + b" " * (1024 - len(header)) + pcm.tobytes())


def write_timit(out: Path, synth_for, rng, n_train: int, n_test: int) -> None:
    """TRAIN|TEST/DR1..2/<SPK>/ with SA1-2, SX (shared pool), SI (unique) and .PHN/.WRD/.TXT."""
    voices = _speaker_voices(n_train + n_test, rng)
    si_counter = 1000
    for k, (pitch, wpm) in enumerate(voices):
        top = "TRAIN" if k < n_train else "TEST"
        speaker = f"{'MF'[k % 2]}{'ABCDEFGHJKLMNPRSTW'[k % 18]}{'XYZ'[k % 3]}{k}0"
        folder = out / top / f"DR{1 + k % 2}" / speaker
        folder.mkdir(parents=True)
        texts = {"SA1": TIMIT_SA[0], "SA2": TIMIT_SA[1]}
        for j in rng.choice(len(TIMIT_SX), 3, replace=False):
            texts[f"SX{10 * (k + 1) + int(j)}"] = TIMIT_SX[j]
        for _ in range(2):
            texts[f"SI{si_counter}"] = " ".join(rng.choice(SI_WORDS, 6, replace=False))
            si_counter += 1
        for utt_id, text in texts.items():
            utt = synth_for(pitch, wpm).synthesize(text)
            wav = np.concatenate([np.zeros(1600, np.float32), _to16k(utt), np.zeros(1600, np.float32)])
            lead = 0.1
            write_sphere(folder / f"{utt_id}.WAV", wav / (np.abs(wav).max() + 1e-9) * 0.7, utt_id)
            phones = [(lead + a, lead + b, "".join(c for c in p if c.isalpha()).lower()) for a, b, p in utt.phones]
            lines, t = [], 0.0
            for a, b, p in phones:  # h# at both ends, pau between words, as TIMIT does
                if a - t > 0.02:
                    lines.append((t, a, "h#" if not lines else "pau"))
                lines.append((a, b, p))
                t = b
            lines.append((t, len(wav) / RATE, "h#"))
            (folder / f"{utt_id}.PHN").write_text("".join(f"{int(a * RATE)} {int(b * RATE)} {p}\n" for a, b, p in lines))
            (folder / f"{utt_id}.WRD").write_text("".join(f"{int((lead + a) * RATE)} {int((lead + b) * RATE)} "
                                                          f"{w.strip('.,').lower()}\n" for a, b, w in utt.words))
            (folder / f"{utt_id}.TXT").write_text(f"0 {len(wav)} {text.capitalize()}.\n")


def write_speech_commands(out: Path, synth_for, rng, n_speakers: int) -> None:
    """35 word folders of 1 s 16 kHz clips + validation/testing lists by speaker + background noise."""
    voices = _speaker_voices(n_speakers, rng)
    speakers = [f"{int(rng.integers(16 ** 7, 16 ** 8)):08x}" for _ in voices]
    lists = {"validation_list.txt": [], "testing_list.txt": []}
    for word in SPEECH_COMMANDS_35:
        (out / word).mkdir(parents=True)
        for k, ((pitch, wpm), spk) in enumerate(zip(voices, speakers)):
            wav = _to16k(synth_for(pitch, wpm).synthesize(word))[:RATE]
            clip = np.zeros(RATE, np.float32)
            off = int(rng.integers(0, RATE - len(wav) + 1))
            clip[off:off + len(wav)] = wav
            _write_wav(out / word / f"{spk}_nohash_0.wav", clip)
            if k == n_speakers - 1:
                lists["testing_list.txt"].append(f"{word}/{spk}_nohash_0.wav")
            elif k == n_speakers - 2:
                lists["validation_list.txt"].append(f"{word}/{spk}_nohash_0.wav")
    for name, rows in lists.items():
        (out / name).write_text("\n".join(rows) + "\n")
    (out / "_background_noise_").mkdir()
    _write_wav(out / "_background_noise_" / "white_noise.wav", (rng.normal(0, 0.05, 5 * RATE)).astype(np.float32))


def write_crema_d(out: Path, synth_for, rng, n_actors: int) -> None:
    """AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav for every actor × sentence × emotion."""
    folder = out / "AudioWAV"
    folder.mkdir(parents=True)
    voices = _speaker_voices(n_actors, rng)
    for k, (pitch, wpm) in enumerate(voices):
        actor = str(1001 + k)
        for code, text in CREMA_SENTENCES.items():
            for emo in CREMA_EMOTIONS:
                dp, fr, gain = EMOTION_PROSODY[emo]
                wav = _to16k(synth_for(int(np.clip(pitch + dp, 0, 99)), int(wpm * fr)).synthesize(text))
                wav = wav / (np.abs(wav).max() + 1e-9) * gain
                _write_wav(folder / f"{actor}_{code}_{emo}_{'XX' if emo == 'NEU' else 'HI'}.wav", wav)


def write_slurp(out: Path, synth_for, rng, n_speakers: int) -> None:
    """dataset/slurp/{train,devel,test}.jsonl + slurp_real/audio-*.flac (one recording per speaker)."""
    import soundfile as sf
    (out / "dataset" / "slurp").mkdir(parents=True)
    (out / "slurp_real").mkdir()
    voices = _speaker_voices(n_speakers, rng)
    records = {"train": [], "devel": [], "test": []}
    sid = 10000
    for (scenario, action), templates in SLURP_INTENTS.items():
        for split, template in zip(("train", "devel", "test"), templates):
            for rep in range(2 if split == "train" else 1):
                sentence = template.format(t=SLURP_TIMES[int(rng.integers(len(SLURP_TIMES)))])
                recs = []
                for pitch, wpm in voices:
                    name = f"audio-{1490000000 + sid * 10 + len(recs)}.flac"
                    sf.write(str(out / "slurp_real" / name), _to16k(synth_for(pitch, wpm).synthesize(sentence)), RATE,
                             format="FLAC")
                    recs.append({"file": name, "wer": 0.0, "ent_wer": 0.0, "status": "correct"})
                records[split].append({"slurp_id": sid, "sentence": sentence, "sentence_annotation": sentence,
                                       "intent": f"{scenario}_{action}", "action": action, "tokens": [],
                                       "scenario": scenario, "recordings": recs})
                sid += 1
    for split, rows in records.items():
        (out / "dataset" / "slurp" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_words(out: Path, synth_for, rng, n_speakers: int) -> None:
    """words/: each content word in the carrier "the <word>", split by word (8/2/2 per category) + pairs."""
    out.mkdir(parents=True)
    voices = _speaker_voices(n_speakers, rng)
    split_of = {}
    for cat, words in CATEGORIES.items():
        order = rng.permutation(words.split())
        split_of.update({w: "train" for w in order[:8]} | {w: "val" for w in order[8:10]} | {w: "test" for w in order[10:]})
    rows = ["file\tword\tcategory\tsplit\tspeaker"]
    for word, cat in VOCABULARY.items():
        for k, (pitch, wpm) in enumerate(voices):
            name = f"{word}_s{k}.wav"
            _write_wav(out / name, _to16k(synth_for(pitch, wpm).synthesize(f"the {word}.")))
            rows.append(f"{name}\t{word}\t{cat}\t{split_of[word]}\ts{k}")
    (out / "words.tsv").write_text("\n".join(rows) + "\n")
    write_miniature_pairs(out / "semantic_pairs.tsv", rng)


def write_miniature_pairs(path: Path, rng) -> None:
    """Near-homophones across categories; "synonyms" = the same words paired within their category."""
    rows = ["# miniature pairs: meaning in the miniature is the semantic category", "word1\tword2\trelation"]
    for a, b in NEAR_HOMOPHONES:
        rows.append(f"{a}\t{b}\tnear_homophone")
        for w in (a, b):
            mates = [m for m in CATEGORIES[VOCABULARY[w]].split() if m != w]
            rows.append(f"{w}\t{mates[int(rng.integers(len(mates)))]}\tsynonym")
    path.write_text("\n".join(rows) + "\n")


# Sentences without any of the miniature's content words: the word's category cannot come from the context.
NEUTRAL_CARRIERS = ("then we talked for a while and i remember the {}.", "after a long time nobody expected the {}.",
                    "it was late in the evening when she saw the {}.")


def write_words_in_carriers(out: Path, synth_for, rng, n_carriers: int) -> None:
    """words_in_carriers/: each content word at the end of neutral sentences (one voice per sentence), written as
    <word>_c<k>.wav + .TextGrid (forced-aligner layout, words tier first) with word_categories.tsv."""
    from textgrid_utils import format_textgrid
    out.mkdir(parents=True)
    voices = _speaker_voices(n_carriers, rng)
    for word in sorted(VOCABULARY):
        for k, (carrier, (pitch, wpm)) in enumerate(zip(NEUTRAL_CARRIERS[:n_carriers], voices)):
            utt = synth_for(pitch, wpm).synthesize(carrier.format(word))
            wav = _to16k(utt)
            _write_wav(out / f"{word}_c{k}.wav", wav)
            tiers = {"words": [(a, b, w.strip(".,").lower()) for a, b, w in utt.words], "phones": utt.phones}
            (out / f"{word}_c{k}.TextGrid").write_text(format_textgrid(tiers, len(wav) / RATE, gap_label=""))
    (out / "word_categories.tsv").write_text(word_categories_tsv())


def _write_wav(path: Path, wav: np.ndarray) -> None:
    import soundfile as sf
    sf.write(str(path), np.clip(wav, -1, 1), RATE, subtype="PCM_16")


def build(out: Path, seed: int = 0, size: str = "demo", quiet: bool = False) -> Path:
    """Write all miniature downstream datasets under `out` (atomically replaced); returns `out`."""
    import downstream_data as dd
    from speech_synth import EspeakSynthesizer
    from tqdm import tqdm

    preset = SIZES[size]
    rng = np.random.default_rng([seed, 7])
    out = Path(out)
    # files only the miniature writes: a folder holding a real timit/ or slurp/ download is never replaced
    check_replaceable(out, ("words/words.tsv", "words_in_carriers"), "folder of miniature downstream datasets")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    synths = {}

    def synth_for(pitch: int, wpm: int):
        return synths.setdefault((pitch, wpm), EspeakSynthesizer(words_per_minute=wpm, pitch=pitch))

    steps = [("timit", lambda d: write_timit(d, synth_for, rng, *preset["timit_speakers"])),
             ("speech_commands", lambda d: write_speech_commands(d, synth_for, rng, preset["sc_speakers"])),
             ("crema_d", lambda d: write_crema_d(d, synth_for, rng, preset["crema_actors"])),
             ("slurp", lambda d: write_slurp(d, synth_for, rng, preset["slurp_speakers"])),
             ("words", lambda d: write_words(d, synth_for, rng, preset["word_speakers"])),
             # its own random stream, so that adding it left the other sets unchanged
             ("words_in_carriers", lambda d: write_words_in_carriers(d, synth_for, np.random.default_rng([seed, 8]),
                                                                     preset["carriers"]))]
    for name, fn in tqdm(steps, desc="downstream datasets", disable=quiet):
        fn(tmp / name)
    # the readers must accept what we wrote (labels, splits, one speaker per split)
    for name, reader in (("timit", dd.read_timit), ("speech_commands", dd.read_speech_commands),
                         ("crema_d", dd.read_crema_d), ("slurp", dd.read_slurp), ("words", dd.read_words)):
        dd.check_splits(reader(tmp / name), str(tmp / name))
    aligned = dd.read_aligned_words(tmp / "words_in_carriers")
    missing = set(VOCABULARY) - {w for words in aligned.values() for _, _, w in words}
    if missing:
        raise AssertionError(f"{tmp / 'words_in_carriers'}: words missing from the alignments: {sorted(missing)[:5]}")
    write_json_atomic(tmp / "build.json", creation_record({"dataset": "miniature downstream datasets", "seed": seed,
                                                           "size": size}))
    replace_dir(tmp, out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per dataset, in its public "
                                                      "layout)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the voices and sentences (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="demo",
                        help="demo (make demo's) or tiny (the tests') (default demo)")
    args = parser.parse_args(argv)
    try:
        out = build(Path(args.out), args.seed, args.size)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"downstream miniatures written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
