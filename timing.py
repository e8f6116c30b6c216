"""The timing contract of the Moth Radio Hour data: TR grids, response alignment and audio windows.

Conventions (SPEC-data.md, "Timing"): the scan starts 10 s before the story audio; a story with respdict
value `n` has a TR grid of `n - 5` TRs whose onsets, relative to audio onset, are `k * TR - 10` seconds;
hf5 response row `j` belongs to TR-grid index `k = j + 10` (rows `[10:-5]` of the grid match all rows of
"data"); the test story drops 40 more rows for evaluation. All times are in seconds from audio onset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TR = 2.0045          # seconds; the Huth-lab loader simulates with 2.0, the scanner ran at 2.0045
SCAN_LEAD_S = 10.0           # the scan starts this long before the audio
RESPDICT_PAD = 5             # respdict counts 5 TRs more than the TR grid has
TRIM_START, TRIM_END = 10, 5  # TR-grid rows without a response at the start / end
TEST_EXTRA_TRIM = 40         # rows of the test story dropped on top of the trim above


class AlignmentError(ValueError):
    """Responses and stimulus TR grid disagree in length."""


@dataclass(frozen=True)
class TRGrid:
    """TR onsets of one story.

    Attributes
    ----------
    onsets : (n_tr,) float64, seconds relative to audio onset (negative before the audio starts).
    tr : float, repetition time in seconds.
    source : where the grid came from ("respdict" simulation or "trfile").
    """
    onsets: np.ndarray
    tr: float
    source: str = "respdict"

    @property
    def n_tr(self) -> int:
        return len(self.onsets)

    @property
    def tr_times(self) -> np.ndarray:
        """(n_tr,) TR midpoints in seconds: the times features are interpolated to."""
        return self.onsets + self.tr / 2.0

    @property
    def tr_ends(self) -> np.ndarray:
        """(n_tr,) end of each TR in seconds."""
        return self.onsets + self.tr


def simulated_tr_grid(respdict_value: int, tr: float = DEFAULT_TR) -> TRGrid:
    """TR grid simulated from a respdict entry: `respdict - 5` TRs, onsets `k * tr - 10` s."""
    n_tr = int(respdict_value) - RESPDICT_PAD
    if n_tr <= TRIM_START + TRIM_END:
        raise AlignmentError(f"respdict value {respdict_value} leaves {n_tr} TRs: need more than "
                             f"{TRIM_START + TRIM_END} to keep any response row")
    return TRGrid(onsets=np.arange(n_tr) * float(tr) - SCAN_LEAD_S, tr=float(tr), source="respdict")


def expected_response_rows(n_tr: int) -> int:
    """Number of hf5 rows a TR grid of `n_tr` TRs must match (rows `[10:-5]`)."""
    return n_tr - TRIM_START - TRIM_END


def check_alignment(grid: TRGrid, n_rows: int, story: str, where: str = "") -> None:
    """Raise AlignmentError naming both numbers unless `n_rows == grid.n_tr - 15`."""
    expected = expected_response_rows(grid.n_tr)
    if n_rows != expected:
        raise AlignmentError(
            f"{where or story}: response has {n_rows} rows but the TR grid of '{story}' has {grid.n_tr} TRs "
            f"({grid.source}), so {expected} rows were expected (grid rows [{TRIM_START}:-{TRIM_END}])")


AUDIO_MAX_SPAN_RATIO = 1.5    # audio longer than this times the grid's span: the wrong file or a mislabelled rate


def check_audio_duration(grid: TRGrid, audio_s: float, story: str, where: str = "") -> None:
    """Raise AlignmentError unless a story's audio (`audio_s` seconds) fits its TR grid.

    The audio must last until the end of the last TR with a response (grid row `n_tr - 6`; the story's audio
    normally ends 5 TRs later, at the grid's end): a shorter file is a truncated copy whose missing part would
    be fed to the model as silence paired with real responses. Audio longer than `AUDIO_MAX_SPAN_RATIO` times the
    grid's end is not this story's audio at this rate.
    """
    last_response_end = float(grid.tr_ends[grid.n_tr - TRIM_END - 1])
    grid_end = float(grid.tr_ends[-1])
    if audio_s < last_response_end:
        raise AlignmentError(
            f"{where or story}: audio lasts {audio_s:.2f} s but the TR grid of '{story}' ({grid.source}, "
            f"{grid.n_tr} TRs) has responses until {last_response_end:.2f} s after audio onset (the audio normally "
            f"ends about {grid_end:.2f} s): {_tr_hint(grid, audio_s, story) or 'the file looks truncated'}")
    if audio_s > AUDIO_MAX_SPAN_RATIO * grid_end:
        wrong_file = "not this story's audio or a wrong sample rate in its header"
        raise AlignmentError(
            f"{where or story}: audio lasts {audio_s:.2f} s but the TR grid of '{story}' ({grid.source}, "
            f"{grid.n_tr} TRs) ends {grid_end:.2f} s after audio onset: more than {AUDIO_MAX_SPAN_RATIO:g}x "
            f"longer, so {_tr_hint(grid, audio_s, story) or wrong_file}")


def _tr_hint(grid: TRGrid, audio_s: float, story: str) -> str:
    """Where a grid simulated with a TR other than the default misfits audio that the default TR's grid fits:
    the message that blames --tr rather than the file (every story would misfit the same way)."""
    if grid.source != "respdict" or grid.tr == DEFAULT_TR:
        return ""
    try:
        check_audio_duration(simulated_tr_grid(grid.n_tr + RESPDICT_PAD), audio_s, story)
    except AlignmentError:
        return ""
    return f"the audio fits the grid of the default TR {DEFAULT_TR} s: is --tr {grid.tr:g} this dataset's TR?"


TRANSCRIPT_END_TOLERANCE_S = 1.0  # alignment rounding; a phone spoken later than this after the audio ends is not in it


def check_transcript_duration(last_spoken_s: float, audio_s: float, story: str, where: str, audio_where: str) -> None:
    """Raise AlignmentError unless a story's TextGrid fits its audio (`audio_s` seconds, file `audio_where`).

    `last_spoken_s`: end of the last word or phone (silence markers excluded) in seconds from audio onset, NaN
    when the TextGrid has none. One that ends more than `TRANSCRIPT_END_TOLERANCE_S` after the audio, or in
    less than 1/`AUDIO_MAX_SPAN_RATIO` of it, is another story's TextGrid (or the audio is), and would place
    every word-level or phone-level feature at the wrong time.
    """
    if not np.isfinite(last_spoken_s):
        raise AlignmentError(f"{where}: no word or phone in tier 0 or 1 of the TextGrid of '{story}'")
    if last_spoken_s > audio_s + TRANSCRIPT_END_TOLERANCE_S:
        raise AlignmentError(f"{where}: words and phones go on until {last_spoken_s:.2f} s but the audio of '{story}' "
                             f"({audio_where}) lasts {audio_s:.2f} s: the TextGrid of another story or recording")
    if audio_s > AUDIO_MAX_SPAN_RATIO * last_spoken_s:
        raise AlignmentError(f"{where}: the last word or phone ends at {last_spoken_s:.2f} s but the audio of "
                             f"'{story}' ({audio_where}) lasts {audio_s:.2f} s, more than {AUDIO_MAX_SPAN_RATIO:g}x "
                             f"longer: the TextGrid of another story or recording")


def response_tr_indices(n_rows: int) -> np.ndarray:
    """TR-grid index of each hf5 row: k = j + 10. Returns (n_rows,) int."""
    return np.arange(n_rows) + TRIM_START


def trim_slice(n_tr: int, test: bool = False) -> slice:
    """Slice of TR-grid rows that match the responses (train) or the evaluated test rows (`[50:-5]`)."""
    start = TRIM_START + (TEST_EXTRA_TRIM if test else 0)
    return slice(start, n_tr - TRIM_END)


def window_samples(tr: float, n_chunks: int = 5, sample_rate: int = 16000) -> int:
    """Fixed length in samples of a brain-tuning input window of `n_chunks` TRs."""
    return int(round(n_chunks * tr * sample_rate))


def window_end_samples(grid: TRGrid, tr_indices: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """End sample (exclusive) of the window of each TR: the end of that TR, from exact times.

    Returns (n,) int64 sample indices relative to audio onset (may exceed the audio length; callers pad).
    """
    ends_s = grid.tr_ends[np.asarray(tr_indices)]
    return np.round(ends_s * sample_rate).astype(np.int64)


def cut_window(wav: np.ndarray, end: int, length: int) -> np.ndarray:
    """Samples `[end - length, end)` of `wav`, zero-padded where they fall before onset or after the end.

    Parameters
    ----------
    wav : (n_samples,) float32 waveform.
    end : exclusive end sample (may be negative or beyond the waveform).
    length : window length in samples.

    Returns
    -------
    (length,) float32.
    """
    out = np.zeros(length, dtype=np.float32)
    start = end - length
    lo, hi = max(start, 0), min(end, len(wav))
    if hi > lo:
        out[lo - start:hi - start] = wav[lo:hi]
    return out
