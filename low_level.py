"""Low-level speech features: mel-band energies of the audio; articulatory, diphone and triphone features of the phones.

Used by the miniature generator (auditory voxels respond to band energies) and by the residual analysis of
the evaluation (SPEC-methods.md §4). Functions return features with their times in seconds.
"""
from __future__ import annotations

import numpy as np

# 22 binary articulatory features per ARPAbet phone (stress stripped): place, manner, voicing, vowel frontness,
# height and rounding. The toolkit's own table, 22 features as SPEC-methods.md §4 asks; the Huth lab's
# articulationdict.json is another 22 (palatal, lateral, approximant, no rounding; vowels not voiced).
ARTICULATORY_FEATURES = (
    "bilabial", "labiodental", "dental", "alveolar", "postalveolar", "velar", "glottal", "stop", "fricative",
    "affricate", "nasal", "liquid", "glide", "voiced", "voiceless", "front", "central", "back", "high", "mid",
    "low", "rounded")
_PHONE_FEATURES = {
    "P": "bilabial stop voiceless", "B": "bilabial stop voiced", "M": "bilabial nasal voiced",
    "F": "labiodental fricative voiceless", "V": "labiodental fricative voiced",
    "TH": "dental fricative voiceless", "DH": "dental fricative voiced",
    "T": "alveolar stop voiceless", "D": "alveolar stop voiced", "N": "alveolar nasal voiced",
    "S": "alveolar fricative voiceless", "Z": "alveolar fricative voiced", "L": "alveolar liquid voiced",
    "R": "postalveolar liquid voiced", "SH": "postalveolar fricative voiceless",
    "ZH": "postalveolar fricative voiced", "CH": "postalveolar affricate voiceless",
    "JH": "postalveolar affricate voiced", "Y": "glide voiced front high", "W": "bilabial glide voiced rounded",
    "K": "velar stop voiceless", "G": "velar stop voiced", "NG": "velar nasal voiced",
    "HH": "glottal fricative voiceless",
    "IY": "voiced front high", "IH": "voiced front high", "EY": "voiced front mid", "EH": "voiced front mid",
    "AE": "voiced front low", "AH": "voiced central mid", "ER": "voiced central mid", "AA": "voiced back low",
    "AO": "voiced back mid rounded", "OW": "voiced back mid rounded", "UH": "voiced back high rounded",
    "UW": "voiced back high rounded", "AY": "voiced front low", "AW": "voiced central low rounded",
    "OY": "voiced back mid rounded",
}


def articulatory_vector(phone: str) -> np.ndarray:
    """(22,) float32 binary articulatory features of one ARPAbet phone (unknown phones -> zeros)."""
    names = _PHONE_FEATURES.get(phone.upper().rstrip("012"), "").split()
    return np.array([f in names for f in ARTICULATORY_FEATURES], dtype=np.float32)


def articulatory_features(phone_labels: list[str]) -> np.ndarray:
    """(n_phones, 22) articulatory features of a phone sequence (times are the phones' midpoints)."""
    if not phone_labels:
        return np.zeros((0, len(ARTICULATORY_FEATURES)), np.float32)
    return np.stack([articulatory_vector(p) for p in phone_labels])


def phone_ngram_features(phone_labels: list[str], n: int, n_buckets: int = 64) -> np.ndarray:
    """(n_phones, n_buckets) one-hot of the phone n-gram ending at each phone (diphones n=2, triphones n=3).

    N-grams (stress stripped, padded with "#" at the story start) are hashed into `n_buckets` with CRC32, which
    keeps the dimension fixed whatever the phone inventory; the bucket of an n-gram is stable across runs.
    """
    import zlib
    labels = ["#"] * (n - 1) + [p.upper().rstrip("012") for p in phone_labels]
    out = np.zeros((len(phone_labels), n_buckets), np.float32)
    for i in range(len(phone_labels)):
        out[i, zlib.crc32(" ".join(labels[i:i + n]).encode()) % n_buckets] = 1.0
    return out


def mel_band_energy(wav: np.ndarray, sample_rate: int = 16000, n_bands: int = 8, win_s: float = 0.025,
                    hop_s: float = 0.01, fmin: float = 50.0, fmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Log mel-band energies of a waveform.

    Parameters
    ----------
    wav : (n_samples,) float waveform at `sample_rate` Hz.

    Returns
    -------
    times : (n_frames,) frame centres in seconds from the first sample.
    energy : (n_frames, n_bands) float32 log(1e-6 + band power).
    """
    import librosa
    n_fft = int(round(win_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    wav = np.asarray(wav, dtype=np.float32)
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    n_frames = 1 + (len(wav) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = wav[idx] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    fbank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_bands, fmin=fmin,
                                fmax=fmax or sample_rate / 2)
    energy = np.log(1e-6 + power @ fbank.T).astype(np.float32)
    times = (hop * np.arange(n_frames) + n_fft / 2) / sample_rate
    return times, energy
