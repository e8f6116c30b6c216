import json
import re

import numpy as np
import pytest

from data_utils import DataError, Ds003020
from voxel_selection import DEFAULT_NC_DIR, load_noise_ceiling, load_roi_file, nc_path, nc_voxel_mask


def test_roi_files_name_file_expected_and_found(tmp_path):
    rois = tmp_path / "rois.json"
    cases = [
        ("{", "rois.json: not a readable ROI file"),
        ("[[1, 2]]", r"rois.json: expected a JSON object \{roi name: \[voxel indices\]\}, found list"),
        ('{"AC": [1, [2, 3]]}', "rois.json: ROI values must be flat lists"),
        ('{"AC": [1.5, 2]}', r"rois.json: ROI 'AC' must be a list of integer voxel indices or a boolean mask, "
                             r"found float64 array of shape \(2,\)"),
        ('{"AC": [true, false]}', "rois.json: ROI 'AC' is a mask of length 2 but the subject has 10 voxels"),
        ('{"AC": [3, 10]}', r"rois.json: ROI 'AC' has voxel index 10 but the subject has 10 voxels \(expected 0..9\)"),
        ('{"AC": [-1, 3]}', "rois.json: ROI 'AC' has voxel index -1 but the subject has 10 voxels"),
    ]
    for text, message in cases:
        rois.write_text(text)
        with pytest.raises(DataError, match=message):
            load_roi_file(rois, 10)
    with pytest.raises(DataError, match=r"rois.jsn: ROI file missing$"):
        load_roi_file(tmp_path / "rois.jsn", 10)
    with pytest.raises(DataError, match=r": a folder, expected the ROI file; it holds \['rois.json'\]$"):
        load_roi_file(tmp_path, 10)  # the folder of the subjects' files given for one
    rois.write_text('{"_note": "metadata", "AC": [4, 1, 4], "empty": [], "mask": ' + json.dumps([True] * 2 + [False] * 8)
                    + "}")
    loaded = load_roi_file(rois, 10)  # sorted, unique; "_" keys are metadata; masks become indices
    assert sorted(loaded) == ["AC", "empty", "mask"]
    np.testing.assert_array_equal(loaded["AC"], [1, 4])
    np.testing.assert_array_equal(loaded["mask"], [0, 1])
    assert loaded["empty"].dtype == np.int64 and loaded["empty"].size == 0
    # a file that names its subject is refused for another one (its indices fit this subject's range)
    rois.write_text('{"_subject": "UTS02", "AC": [1, 2]}')
    with pytest.raises(DataError, match="rois.json: ROIs of subject 'UTS02', expected 'UTS01'"):
        load_roi_file(rois, 10, subject="UTS01")
    np.testing.assert_array_equal(load_roi_file(rois, 10, subject="UTS02")["AC"], [1, 2])
    np.testing.assert_array_equal(load_roi_file(rois, 10)["AC"], [1, 2])  # no subject asked: no check
    npz = tmp_path / "rois.npz"
    np.savez(npz, AC=np.array([object()], dtype=object))
    with pytest.raises(DataError, match=r"rois.npz: not a readable ROI file \(it holds pickled \(object\) arrays"):
        load_roi_file(npz, 10)
    np.savez(npz, AC=np.arange(4))
    npz.write_bytes(npz.read_bytes()[:100])  # a copy cut short: numpy raises a BadZipFile, not an OSError
    with pytest.raises(DataError, match="rois.npz: not a readable ROI file"):
        load_roi_file(npz, 10)
    np.save(tmp_path / "one.npy", np.arange(4))
    (tmp_path / "one.npy").rename(npz)  # an array saved as .npy under an .npz name
    with pytest.raises(DataError, match=r"rois.npz: not a readable ROI file \(ValueError: a .npy \(one array of shape"):
        load_roi_file(npz, 10)


def test_noise_ceiling_files_name_file_expected_and_found(mini, tmp_path):
    assert nc_path(3) == DEFAULT_NC_DIR / "UTS03.npy" and nc_path("uts03", tmp_path) == tmp_path / "UTS03.npy"
    with pytest.raises(DataError, match=r"UTS01.npy: noise ceiling has 120 values but subject UTS01 has 99 voxels"):
        load_noise_ceiling("UTS01", 99, nc_dir=mini / "subject_NCs")
    with pytest.raises(DataError, match="no voxel has a noise ceiling above 0.99"):
        nc_voxel_mask(np.full(5, 0.5), 0.99)
    nc_file = tmp_path / "UTS01.npy"
    # what the file holds is named; numpy's "pickled data ... load it unsafely" advice for a foreign file is not passed on
    for blob, says in ((b"not an npy file", r"not a .npy or .npz file: it starts with b'not an npy file', where a .npy "
                                            r"starts with b'\\x93NUMPY'"),
                       (b"PK\x03\x04 an .npz renamed .npy, cut short", "BadZipFile"),
                       (b"/annex/objects/MD5E-s1234--0a1b.npy\n", r"not a .npy or .npz file: .*\(a git-annex pointer whose content is not downloaded: `datalad get` it\)"),
                       (b"", r"the file is empty")):
        nc_file.write_bytes(blob)
        with pytest.raises(DataError, match=r"UTS01.npy: not a readable .npy array of noise ceilings \(" + says) as caught:
            load_noise_ceiling("UTS01", nc_file=nc_file)
        assert "allow_pickle" not in str(caught.value)
    np.save(nc_file, np.array([0.5, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"UTS01.npy: .*it holds pickled \(object\) arrays, which are never loaded"):
        load_noise_ceiling("UTS01", nc_file=nc_file)
    np.save(nc_file, np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"UTS01.npy: expected a 1-D vector of one value per voxel, found shape \(3, 2\)"):
        load_noise_ceiling("UTS01", nc_file=nc_file)
    # values that are not cc_max: a percentage, a file of NaN, a boolean mask saved in its place
    for values, message in (([0.2, 45.0, 0.5], r"UTS01.npy: expected noise ceilings \(cc_max\) in \[0, 1\], found 1 "
                                                r"of 3 values outside \(min 0.2, max 45\)"),
                            ([-0.3, 0.5, 0.1], r"found 1 of 3 values outside \(min -0.3, max 0.5\)"),
                            ([0.2, 1.005, 0.5], r"found 1 of 3 values outside \(min 0.2, max 1.005\)"),
                            ([0.2 + 0.1j, 0.5, 0.1], r"expected real noise-ceiling values \(cc_max\), found dtype "
                                                     r"complex128"),
                            ([np.nan, np.nan, np.inf], r"UTS01.npy: no finite noise-ceiling value among its 3 voxels"),
                            ([True, False, True], r"UTS01.npy: expected real noise-ceiling values \(cc_max\), found "
                                                  r"dtype bool")):
        np.save(nc_file, np.array(values))
        with pytest.raises(DataError, match=message):
            load_noise_ceiling("UTS01", 3, nc_file=nc_file)
    np.save(nc_file, np.array([0.0, np.nan, 1.0]))  # NaN voxels are kept (they pass no floor); 0 and 1 are cc_max
    np.testing.assert_array_equal(load_noise_ceiling("UTS01", 3, nc_file=nc_file), [0.0, np.nan, 1.0])
    with pytest.raises(DataError, match=r"UTS03.npy: noise-ceiling file missing; create it with `python "
                                        r"compute_noise_ceiling.py --data-dir DIR --subject UTS03`"):
        load_noise_ceiling(3, nc_dir=tmp_path)
    # the folder given for the file: named as a folder with what it holds, not as missing nor "create it"
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: a folder, expected the noise-ceiling file; "
                                        r"it holds \['UTS01.npy'\]$"):
        load_noise_ceiling("UTS01", 3, nc_file=tmp_path)


def test_noise_ceiling_files_match_the_formula_and_mask(mini, mini_root):
    from eval_utils import noise_ceiling
    data = Ds003020(mini_root)
    nc = load_noise_ceiling("UTS02", data.n_voxels("UTS02"), nc_dir=mini / "subject_NCs")
    np.testing.assert_allclose(nc, noise_ceiling(data.load_repeats("UTS02")), atol=1e-6)
    truth = np.load(mini / "ground_truth" / "UTS02.npz")
    assert nc[truth["types"] == "noise"].mean() < 0.2 < nc[truth["snr"] > 0.3].mean()
    mask = nc_voxel_mask(nc, 0.4)
    assert mask.dtype == bool and 0.15 < mask.mean() < 0.8


def test_nc_voxel_mask_keeps_voxels_strictly_above_the_threshold_and_never_nan():
    mask = nc_voxel_mask(np.array([0.4, 0.41, np.nan, 0.1, 0.9]), 0.4)
    assert mask.tolist() == [False, True, False, False, True]


def test_a_ceiling_measured_on_another_story_than_the_scored_one_is_noted(tmp_path):
    from voxel_selection import other_story_ceiling_note
    nc = tmp_path / "UTS01.npy"
    np.save(nc, np.full(3, 0.5))
    # no record beside it: the dataset's repeated story is presumed
    assert other_story_ceiling_note(nc, "wheretheressmoke", "wheretheressmoke") is None
    assert other_story_ceiling_note(nc, "souls", "wheretheressmoke") == (
        f"note: cc_max of {nc} (the repeats of 'wheretheressmoke', presumably) normalises the alignment on 'souls', "
        "a story it was not measured on")
    (tmp_path / "UTS01.json").write_text(json.dumps({"story": "souls"}))  # compute_noise_ceiling.py --story souls
    assert other_story_ceiling_note(nc, "souls", "wheretheressmoke") is None
    assert "(the repeats of 'souls') normalises the alignment on 'wheretheressmoke'" in other_story_ceiling_note(
        nc, "wheretheressmoke", "wheretheressmoke")
    (tmp_path / "UTS01.json").write_text("{not json")  # an unreadable record: presumed, not a crash
    assert "presumably" in other_story_ceiling_note(nc, "souls", "wheretheressmoke")
    (tmp_path / "UTS01.json").write_text(json.dumps({"story": 7}))  # a story that is no name: presumed too
    assert "(the repeats of 'wheretheressmoke', presumably)" in other_story_ceiling_note(nc, "souls", "wheretheressmoke")
