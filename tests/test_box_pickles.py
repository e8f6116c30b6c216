import pickle

import numpy as np
import pytest

from box_pickles import UnsafePickleError, load_box_textgrids, load_box_tr_grids, restricted_load
from data_utils import Ds003020
from textgrid_utils import parse_textgrid, words_from_tiers


def test_miniature_pickles_load_with_the_real_module_paths(mini, mini_root):
    raw = (mini / "box" / "trfiles_huge.jbl").read_bytes()
    assert b"huth.stimulus_utils" in raw and b"TRFile" in raw
    assert b"ridge_utils.textgrid" in (mini / "box" / "grids_huge.jbl").read_bytes()
    data = Ds003020(mini_root)
    grids = load_box_tr_grids(mini / "box" / "trfiles_huge.jbl")
    for story, grid in grids.items():
        # absolute scanner clocks differ per story; relative to sound start they equal the simulated grid
        np.testing.assert_allclose(grid.onsets, data.tr_grid(story).onsets, atol=1e-9)
    texts = load_box_textgrids(mini / "box" / "grids_huge.jbl")
    story = sorted(texts)[0]
    assert words_from_tiers(parse_textgrid(texts[story])).labels == data.words(story).labels


def test_alignment_through_the_trfiles(mini, mini_root):
    data = Ds003020(mini_root)
    data.use_box_trfiles(mini / "box" / "trfiles_huge.jbl")
    assert data.tr_grid("souls").source.startswith("trfile")
    assert data.load_responses("UTS01", "souls").shape[0] == data.respdict["souls"] - 20


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_foreign_global_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.jbl"
    path.write_bytes(pickle.dumps({"story": Evil()}))
    with pytest.raises(UnsafePickleError, match=r"evil.jbl.*refused global '(posix|os)\.system'"):
        restricted_load(path)


def test_object_arrays_are_refused(tmp_path):
    import joblib
    path = tmp_path / "obj.jbl"
    joblib.dump({"x": np.array([{"a": 1}], dtype=object)}, path)
    with pytest.raises(UnsafePickleError, match="object array"):
        restricted_load(path)
    ok = tmp_path / "ok.jbl"
    joblib.dump({"x": np.arange(5.0)}, ok)
    np.testing.assert_array_equal(restricted_load(ok)["x"], np.arange(5.0))
