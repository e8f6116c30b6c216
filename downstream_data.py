"""Readers for the downstream probing datasets in their public layouts (TIMIT, Speech Commands, CREMA-D, SLURP).

Each reader returns a list of `Utterance` records (audio path, split, label(s), speaker, alignments) and never
loads audio; `load_utterance_audio` does, at 16 kHz mono. Splits are fixed by the datasets where they define
them (TIMIT TRAIN/TEST, Speech Commands list files, SLURP jsonl files) and by speaker/actor otherwise, so that
no speaker is in two splits. Label maps are built once over all splits (SLURP intents, 61→39 TIMIT phones).
The `words` layout (`words.tsv` + wavs) is the toolkit's own, written by the miniature for the semantic probe;
`read_aligned_words` reads word alignments of any `<name>.wav` + `<name>.TextGrid` folder (forced-aligner output).
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from file_readers import SAMPLE_RATE, DataError, audio_info, load_wav_16k, read_text_file, read_tsv, visible_files
from run_utils import first_few

SPLITS = ("train", "val", "test")

# ---------------------------------------------------------------------------------------- TIMIT 61 -> 39
# Lee & Hon (1989) folding; closures, pauses and epenthetic silence fold into "sil"; the glottal stop is dropped.
TIMIT_FOLDING = {
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m", "en": "n",
    "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw",
    "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil", "dcl": "sil", "gcl": "sil", "h#": "sil", "pau": "sil",
    "epi": "sil", "q": None,
}
TIMIT_39 = ("iy", "ih", "eh", "ae", "ah", "uw", "uh", "aa", "ey", "ay", "oy", "aw", "ow", "er", "l", "r", "w", "y",
            "m", "n", "ng", "v", "f", "dh", "th", "z", "s", "sh", "jh", "ch", "b", "p", "d", "dx", "t", "g", "k",
            "hh", "sil")
TIMIT_61 = tuple(sorted(set(TIMIT_39) - {"sil"} | set(TIMIT_FOLDING)))
SENTENCE_TYPES = ("SA", "SI", "SX")
TIMIT_RATE = 16000

SPEECH_COMMANDS_35 = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four",
                      "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right",
                      "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")
SPEECH_COMMANDS_V2_ONLY = ("backward", "follow", "forward", "learn", "visual")  # absent from v0.01's 30 words
CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


@dataclass
class Utterance:
    """One audio file of a downstream dataset.

    label : the class name (single-label tasks); None where the task reads `segments`.
    segments : time-aligned labels [(start_s, end_s, label)], e.g. TIMIT phones (folded) or words.
    """
    path: Path
    split: str
    label: str | None
    speaker: str
    segments: list = field(default_factory=list)
    words: list = field(default_factory=list)


def fold_timit_phone(phone: str) -> str | None:
    """61-phone TIMIT label -> 39-phone set (None for the dropped glottal stop `q`)."""
    p = phone.strip().lower()
    if p in TIMIT_FOLDING:
        return TIMIT_FOLDING[p]
    if p in TIMIT_39:
        return p
    raise DataError(f"unknown TIMIT phone label {phone!r} (expected one of the 61 TIMIT phones)")


def read_sample_alignment(path: Path, sample_rate: int = TIMIT_RATE) -> list[tuple[float, float, str]]:
    """TIMIT .PHN/.WRD file (`start_sample end_sample label` per line) -> [(start_s, end_s, label)]."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise DataError(f"{path}, line {i}: expected 'start_sample end_sample label', found {line!r}")
        a, b = int(parts[0]), int(parts[1])
        if b < a:
            raise DataError(f"{path}, line {i}: end sample {b} before start sample {a}")
        out.append((a / sample_rate, b / sample_rate, parts[2]))
    return out


def _ci_glob(folder: Path, pattern: str) -> list[Path]:
    """Case-insensitive glob (TIMIT copies exist in upper and lower case)."""
    rx = re.compile(re.escape(pattern).replace(r"\*", ".*") + "$", re.IGNORECASE)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if rx.match(p.name) and not p.name.startswith("."))  # no AppleDouble


def held_below_hint(root: Path, marker: str) -> str:
    """"; <root>/<sub> holds <marker>: pass that folder" when a folder just below `root` holds `marker` (a relative
    path, any letter case at its first level), else "": the parent of the dataset given (say the miniature's root)."""
    first, _, rest = marker.partition("/")
    subs = [d for d in _ci_glob(root, "*") if d.is_dir()]
    held = [d for d in subs if any(p.joinpath(rest).exists() if rest else True for p in _ci_glob(d, first))]
    return f"; {held[0]} holds {marker}: pass that folder" if held else ""


def held_out_speakers(speakers: list[str], fraction: float) -> set[str]:
    """A deterministic speaker-level hold-out (at least one): the speakers with the smallest CRC32 of their id."""
    ranked = sorted(set(speakers), key=lambda sp: (zlib.crc32(sp.encode()), sp))
    return set(ranked[:max(1, int(round(fraction * len(ranked))))])


def read_timit(root: str | Path, val_fraction: float = 0.1, include_sa: bool = True) -> list[Utterance]:
    """TIMIT under `root` (TRAIN|TEST/DR*/<SPEAKER>/<UTT>.WAV|.PHN|.WRD; any letter case; a RIFF <UTT>.WAV.wav
    beside or instead of the SPHERE <UTT>.WAV is read in its place).

    TRAIN speakers are split into train/val by speaker (`held_out_speakers`), TEST is test.
    Phone segments are folded to 39 classes (q dropped). Labels: the sentence type (SA, SI, SX).
    """
    root = Path(root)
    speaker_dirs = []
    for top in ("TRAIN", "TEST"):
        (top_dir,) = _ci_glob(root, top) or [None]
        if top_dir is None:
            hint = held_below_hint(root, top)  # Kaggle's copy of TIMIT keeps TRAIN/ and TEST/ under data/
            raise DataError(f"{root}: no {top}/ folder (expected the TIMIT layout TRAIN|TEST/DR1..DR8/<SPEAKER>/){hint}")
        speaker_dirs += [(top, d) for dr in _ci_glob(top_dir, "DR*") for d in sorted(dr.iterdir()) if d.is_dir()]
    val_speakers = held_out_speakers([d.name.upper() for top, d in speaker_dirs if top == "TRAIN"], val_fraction)
    utts = []
    for top, spk_dir in speaker_dirs:
        speaker = spk_dir.name.upper()
        split = "test" if top == "TEST" else ("val" if speaker in val_speakers else "train")
        audio: dict[str, list[Path]] = {}  # utterance id -> its audio files
        for path in _ci_glob(spk_dir, "*.WAV"):
            audio.setdefault(path.name.split(".")[0].upper(), []).append(path)
        # a .PHN without its audio is an incomplete copy; skipping it would quietly shrink the probe's data
        orphans = sorted({p.name for p in _ci_glob(spk_dir, "*.PHN") if p.name.split(".")[0].upper() not in audio})
        if orphans:
            raise DataError(f"{spk_dir / orphans[0]}: no matching .WAV audio beside it ({len(orphans)} such .PHN in "
                            f"{spk_dir}; every TIMIT utterance has both: an incomplete download?)")
        for utt, files in sorted(audio.items()):
            # TIMIT's audio is NIST SPHERE <id>.WAV; some copies (Kaggle's) add a RIFF <id>.WAV.wav beside it:
            # the same samples, one utterance, read from the RIFF copy (any reader takes it)
            wav = max(files, key=lambda path: len(path.name))
            stype = utt[:2]
            if stype not in SENTENCE_TYPES:
                raise DataError(f"{wav}: utterance id {utt!r} does not start with SA, SI or SX")
            if stype == "SA" and not include_sa:
                continue
            phn = _ci_glob(spk_dir, utt + ".PHN")
            wrd = _ci_glob(spk_dir, utt + ".WRD")
            if not phn:
                raise DataError(f"{wav}: no matching .PHN alignment in {spk_dir}")
            segments = read_sample_alignment(phn[0])
            if not segments:  # every TIMIT .PHN holds at least its h# silences: this one is empty or cut short
                raise DataError(f"{phn[0]}: no phone segments (an empty or truncated file)")
            try:
                phones = [(a, b, f) for a, b, p in segments if (f := fold_timit_phone(p)) is not None]
            except DataError as err:  # the folding does not know the file
                raise DataError(f"{phn[0]}: {err}") from err
            words = read_sample_alignment(wrd[0]) if wrd else []
            utts.append(Utterance(wav, split, stype, speaker, phones, words))
    if not utts:
        raise DataError(f"{root}: TIMIT layout found but no .WAV files under DR*/<SPEAKER>/")
    return utts


def read_speech_commands(root: str | Path, words: tuple = SPEECH_COMMANDS_35) -> list[Utterance]:
    """Speech Commands v0.02: `<word>/<speaker>_nohash_<i>.wav` + validation_list.txt / testing_list.txt."""
    root = Path(root)
    lists = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        path = root / name
        if not path.is_file():
            # torchaudio's SPEECHCOMMANDS (the paper's loader) downloads into <root>/SpeechCommands/<version>/
            inner = [d for d in sorted((root / "SpeechCommands").glob("speech_commands_v0.0*")) if (d / name).is_file()]
            hint = (f"; {inner[-1]} holds it (torchaudio's download layout): pass that folder" if inner
                    else held_below_hint(root, name))
            raise DataError(f"{root}: missing {name} (Speech Commands v0.02 layout){hint}")
        lists.update({line.strip(): split for line in read_text_file(path).splitlines() if line.strip()})
    utts = []
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    missing = [w for w in words if w not in found]
    if missing:
        version = " (this looks like v0.01: the paper's task uses v0.02)" if set(missing) == set(SPEECH_COMMANDS_V2_ONLY) else ""
        raise DataError(f"{root}: word folders missing: {missing} (found {found}){version}")
    for word in words:
        for wav in visible_files(root / word, "*.wav"):
            rel = f"{word}/{wav.name}"
            utts.append(Utterance(wav, lists.get(rel, "train"), word, wav.name.split("_nohash_")[0]))
    # a listed file that is absent (a partial download) would shrink the held-out splits silently
    absent = [rel for rel in lists if rel.split("/")[0] in words and not (root / rel).is_file()]
    if absent:
        raise DataError(f"{root}: {len(absent)} file(s) listed in validation_list.txt/testing_list.txt are missing: "
                        f"{first_few(absent)} (an incomplete download?)")
    return utts


def read_crema_d(root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.2) -> list[Utterance]:
    """CREMA-D: `AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`; split by actor (sorted ids: last ones test)."""
    folder = Path(root) / "AudioWAV"
    if not folder.is_dir():
        raise DataError(f"{root}: no AudioWAV/ folder (CREMA-D layout){held_below_hint(Path(root), 'AudioWAV')}")
    rows = []
    for wav in visible_files(folder, "*.wav"):
        parts = wav.stem.split("_")
        if len(parts) != 4 or parts[2] not in CREMA_EMOTIONS:
            raise DataError(f"{wav}: expected <actor>_<sentence>_<EMO>_<level>.wav with EMO in {CREMA_EMOTIONS}")
        rows.append((wav, parts[0], parts[2]))
    if not rows:  # e.g. the files moved into split folders (AudioWAV/training/, as the paper's own loader reads)
        inner = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(visible_files(p, "*.wav")))
        raise DataError(f"{folder}: no .wav files (expected AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav"
                        + (f"; found them in sub-folders {inner}: put them back in AudioWAV/, the split is by "
                           f"actor here)" if inner else ")"))
    actors = sorted({a for _, a, _ in rows})
    n_test = max(1, int(round(test_fraction * len(actors))))
    n_val = max(1, int(round(val_fraction * len(actors))))
    if len(actors) < n_test + n_val + 1:
        raise DataError(f"{folder}: {len(actors)} actors, too few for an actor-level train/val/test split")
    split_of = {a: "test" if i >= len(actors) - n_test else ("val" if i >= len(actors) - n_test - n_val else "train")
                for i, a in enumerate(actors)}
    return [Utterance(w, split_of[a], e, a) for w, a, e in rows]


def read_slurp(root: str | Path, label: str = "intent", audio_dir: str | Path | None = None) -> list[Utterance]:
    """SLURP: `dataset/slurp/{train,devel,test}.jsonl` + audio in `slurp_real/` or where the SLURP repository's
    `scripts/download_audio.sh` puts it, `audio/slurp_real/` below the folder it ran in (the repository's root or
    `scripts/`, as in the paper's code); one record per recording."""
    root = Path(root)
    if audio_dir:
        audio = Path(audio_dir)
    else:
        places = [root / "slurp_real", root / "audio" / "slurp_real", root / "scripts" / "audio" / "slurp_real"]
        audio = next((p for p in places if p.is_dir()), None)
        if audio is None:  # found now, not as a missing file hours into the extraction
            raise DataError(f"{root}: no SLURP audio folder (expected one of {', '.join(map(str, places))})"
                            f"{held_below_hint(root, 'dataset/slurp')}")
    utts = []
    for split, name in (("train", "train"), ("val", "devel"), ("test", "test")):
        path = root / "dataset" / "slurp" / f"{name}.jsonl"
        if not path.is_file():
            raise DataError(f"{root}: missing dataset/slurp/{name}.jsonl (SLURP layout)")
        for i, line in enumerate(read_text_file(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {i}: not a JSON record ({err})") from err
            if not isinstance(rec, dict) or label not in rec or "recordings" not in rec:
                found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                raise DataError(f"{path}, line {i}: no '{label}' or 'recordings' field (found {found})")
            for r in rec["recordings"]:
                if not isinstance(r, dict) or "file" not in r:
                    raise DataError(f"{path}, line {i}: a recording without a 'file' field (found {r!r})")
                utts.append(Utterance(audio / r["file"], split, str(rec[label]), str(rec.get("slurp_id", i))))
    return utts


def read_words(root: str | Path) -> list[Utterance]:
    """The miniature's word dataset: `words.tsv` (file, word, category, split, speaker) + wav files.

    The semantic-category probe holds out words, not recordings: a word listed in two splits (its recordings
    heard in training and scored in test) or under two categories is a DataError naming the file and lines.
    """
    path = Path(root) / "words.tsv"
    if not path.is_file():
        raise DataError(f"{root}: no words.tsv (the miniature word-dataset layout)"
                        f"{held_below_hint(Path(root), 'words.tsv')}")
    utts, first_seen = [], {}  # word -> (line, category, split) of its first row
    for i, row in read_tsv(path, ["file", "word", "category", "split", "speaker"]):
        if len(row) != 5 or row[3] not in SPLITS or not all(row):
            raise DataError(f"{path}, line {i}: expected 5 non-empty tab-separated fields with split in {SPLITS}, "
                            f"found {row}")
        f, word, category, split, speaker = row
        line, category0, split0 = first_seen.setdefault(word, (i, category, split))
        for what, this, first in (("category", category, category0), ("split", split, split0)):
            if this != first:
                raise DataError(f"{path}, line {i}: word {word!r} in {what} {this!r}, but in {first!r} on line {line}"
                                f" (one {what} per word: the probe holds out words)")
        utts.append(Utterance(path.parent / f, split, category, speaker, words=[(0.0, 0.0, word)]))
    return utts


def read_aligned_words(root: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """Word alignments of a `<name>.wav` + `<name>.TextGrid` folder (Montreal Forced Aligner output layout).

    The word tier is the one named "words"/"word", else tier 1 (the ds003020 convention); Huth filtering applies.
    Returns {wav path: [(start_s, end_s, word)]}, sorted by file name.
    """
    from textgrid_utils import read_textgrid, words_from_tiers
    root = Path(root)
    wavs = visible_files(root, "*.wav")
    if not wavs:
        raise DataError(f"{root}: no .wav files (expected <name>.wav + <name>.TextGrid pairs)")
    out = {}
    for wav in wavs:
        grid = wav.with_suffix(".TextGrid")
        if not grid.is_file():
            raise DataError(f"{wav}: no matching alignment {grid.name} (expected <name>.wav + <name>.TextGrid)")
        words = words_from_tiers(read_textgrid(grid), str(grid), by_name=True)
        out[str(wav)] = list(zip(words.starts.tolist(), words.ends.tolist(), words.labels))
    return out


def label_map(utts: list[Utterance]) -> dict[str, int]:
    """One label -> index map over all splits (sorted names), so indices mean the same in train and test."""
    return {name: i for i, name in enumerate(sorted({u.label for u in utts if u.label is not None}))}


def check_splits(utts: list[Utterance], source: str) -> dict[str, int]:
    """Utterances per split; a clear error if a split is empty (speaker-level splits are the readers' job)."""
    counts = {s: sum(u.split == s for u in utts) for s in SPLITS}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"{source}: split(s) {empty} hold no utterance (counts {counts})")
    return counts


# Shorter audio holds no speech a probe could use, and is below the conv front ends' receptive field (the model
# would stop with a shape error): such an utterance (an empty or truncated file) is skipped and recorded.
MIN_UTTERANCE_S = 0.1


def utterance_samples(utt: Utterance) -> int:
    """Length of an utterance's audio in 16 kHz samples: from the file's header when it is at 16 kHz (every
    downstream dataset here), else by reading it. Raises DataError naming a missing or unreadable file."""
    info = audio_info(utt.path)
    return int(info.frames) if info.samplerate == SAMPLE_RATE else len(load_utterance_audio(utt))


# TIMIT's last segment ends at the file's last sample; a few samples' slack, no more
ALIGNMENT_SLACK_S = 0.05


def check_within_audio(source, end_s: float, n_samples: int, alignment: str) -> None:
    """Raise DataError unless an alignment ending at `end_s` seconds fits audio of `n_samples` 16 kHz samples (plus
    `ALIGNMENT_SLACK_S`): one that runs past the end belongs to another recording, or to a truncated copy, and
    would label frames the audio does not have. `alignment` names it in the message (".PHN/.WRD", "TextGrid")."""
    audio_s = n_samples / SAMPLE_RATE
    if end_s > audio_s + ALIGNMENT_SLACK_S:
        raise DataError(f"{source}: its time alignment ({alignment}) ends at {end_s:.3f} s but the audio lasts "
                        f"{audio_s:.3f} s: the alignment of another recording, or a truncated file")


def check_segments_within_audio(utt: Utterance, n_samples: int) -> None:
    """`check_within_audio` for an utterance's phones and words."""
    ends = [b for _, b, _ in utt.segments] + [b for _, b, _ in utt.words]
    if ends:
        check_within_audio(utt.path, max(ends), n_samples, ".PHN/.WRD")


def load_utterance_audio(utt: Utterance) -> np.ndarray:
    """(n_samples,) float32 16 kHz mono waveform of one utterance (any rate/channels/format libsndfile reads)."""
    return load_wav_16k(utt.path)
