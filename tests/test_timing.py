import numpy as np
import pytest

from timing import (AlignmentError, TRGrid, check_alignment, check_audio_duration, check_transcript_duration,
                    cut_window, expected_response_rows, response_tr_indices, simulated_tr_grid, trim_slice, window_end_samples, window_samples)


def test_simulated_grid_follows_the_contract():
    grid = simulated_tr_grid(363, tr=2.0045)
    assert grid.n_tr == 358
    assert grid.onsets[0] == pytest.approx(-10.0)
    assert grid.onsets[7] == pytest.approx(7 * 2.0045 - 10.0)
    assert grid.tr_times[0] == pytest.approx(-10.0 + 1.00225)
    assert grid.tr_ends[-1] == pytest.approx(357 * 2.0045 - 10.0 + 2.0045)


def test_alignment_accepts_n_minus_20_and_names_both_numbers():
    grid = simulated_tr_grid(311)
    check_alignment(grid, 291, "wheretheressmoke")
    with pytest.raises(AlignmentError, match=r"292 rows.*306 TRs.*291 rows were expected"):
        check_alignment(grid, 292, "wheretheressmoke")


def test_row_to_tr_mapping_and_trims():
    assert list(response_tr_indices(3)) == [10, 11, 12]
    n_tr = 306
    assert trim_slice(n_tr) == slice(10, 301)
    assert trim_slice(n_tr, test=True) == slice(50, 301)
    assert len(range(n_tr)[trim_slice(n_tr, test=True)]) == 291 - 40


def test_window_end_is_the_end_of_tr_k_in_exact_samples():
    grid = TRGrid(onsets=np.arange(30) * 2.0045 - 10.0, tr=2.0045)
    ends = window_end_samples(grid, response_tr_indices(2), 16000)
    # row 0 <-> TR 10, which ends at 11 * 2.0045 - 10 = 12.0495 s
    assert ends[0] == round(12.0495 * 16000)
    assert ends[1] == round(14.054 * 16000)
    assert window_samples(2.0045, 5, 16000) == round(10.0225 * 16000)
    # exact sample counts, computed in integers: float products land a hair below them (0.7 * 3 * 16000)
    k = np.arange(30)
    np.testing.assert_array_equal(window_end_samples(grid, k, 16000), (k + 1) * 32072 - 160000)
    assert window_samples(0.7, 3, 16000) == 33600


def test_a_respdict_value_must_leave_at_least_one_response_row():
    assert expected_response_rows(simulated_tr_grid(21).n_tr) == 1
    with pytest.raises(AlignmentError, match="respdict value 20 leaves 15 TRs: need more than 15"):
        simulated_tr_grid(20)


def test_cut_window_pads_before_onset_and_after_end():
    wav = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(cut_window(wav, 3, 5), [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(cut_window(wav, 12, 4), [9, 10, 0, 0])
    np.testing.assert_array_equal(cut_window(wav, -1, 3), [0, 0, 0])
    np.testing.assert_array_equal(cut_window(wav, 6, 3), [4, 5, 6])


def test_audio_must_cover_the_last_response_tr_and_not_be_far_longer_than_the_grid():
    grid = simulated_tr_grid(36, tr=2.0)  # 31 TRs, onsets 2k - 10: the last response TR (k = 25) ends at 42 s,
    check_audio_duration(grid, 42.0, "souls")  # the grid itself at 52 s
    check_audio_duration(grid, 52.0 * 1.5, "souls")
    with pytest.raises(AlignmentError, match=r"x.wav: audio lasts 41.90 s .*'souls' \(respdict, 31 TRs\) has "
                                             r"responses until 42.00 s .*ends about 52.00 s.*truncated"):
        check_audio_duration(grid, 41.9, "souls", where="x.wav")
    with pytest.raises(AlignmentError, match=r"audio lasts 78.10 s .*ends 52.00 s after audio onset: more than 1.5x"):
        check_audio_duration(grid, 78.1, "souls")
    # audio that the default TR's grid fits (52 s) misfits a grid simulated with another --tr: the TR is named
    for tr, why in ((2.5, r"responses until 55.00 s"), (1.0, r"ends 21.00 s after audio onset: more than 1.5x")):
        with pytest.raises(AlignmentError, match=why + r".*fits the grid of the default TR 2.0045 s: is --tr "
                                                       rf"{tr:g} this dataset's TR\?"):
            check_audio_duration(simulated_tr_grid(36, tr=tr), 52.0, "souls")


def test_a_textgrid_must_end_within_its_audio_and_not_far_before_it():
    check_transcript_duration(64.9, 64.0, "souls", "s.TextGrid", "s.wav")  # alignment rounding: 0.9 s past the end
    check_transcript_duration(42.7, 64.0, "souls", "s.TextGrid", "s.wav")  # audio 1.499x the speech
    with pytest.raises(AlignmentError, match=r"s.TextGrid: words and phones go on until 65.10 s but the audio of "
                                             r"'souls' \(s.wav\) lasts 64.00 s: the TextGrid of another story"):
        check_transcript_duration(65.1, 64.0, "souls", "s.TextGrid", "s.wav")
    with pytest.raises(AlignmentError, match=r"s.TextGrid: the last word or phone ends at 42.60 s but the audio of "
                                             r"'souls' \(s.wav\) lasts 64.00 s, more than 1.5x longer"):
        check_transcript_duration(42.6, 64.0, "souls", "s.TextGrid", "s.wav")
    with pytest.raises(AlignmentError, match=r"s.TextGrid: no word or phone in tier 0 or 1 of the TextGrid of 'souls'"):
        check_transcript_duration(float("nan"), 64.0, "souls", "s.TextGrid", "s.wav")
