"""ROI columns from volumes, and the clear message when pycortex is absent."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import pycortex_rois
from data_utils import DataError


def test_mask_columns_follow_c_order_of_the_mask():
    mask = np.zeros((2, 2, 3), bool)
    mask[0, 0, 1] = mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 1, 1] = True   # columns 0, 1, 2, 3 in C order
    roi = np.zeros_like(mask)
    roi[1, 1, 1] = roi[0, 1, 2] = True
    roi[0, 0, 0] = True                                                     # outside the mask: ignored
    assert pycortex_rois.mask_columns(mask, roi) == [1, 3]
    with pytest.raises(DataError, match="differs from the mask shape"):
        pycortex_rois.mask_columns(mask, roi[:1])


@pytest.mark.skipif(importlib.util.find_spec("cortex") is not None, reason="pycortex installed")
def test_missing_pycortex_is_a_clear_error(mini_root, tmp_path, capsys):
    rc = pycortex_rois.main(["--data-dir", str(mini_root), "--subject", "1", "--out", str(tmp_path / "r.json")])
    assert rc == pycortex_rois.EXIT_MISSING_DEP
    assert "needs pycortex" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_roi_file_records_how_it_was_made_and_loads_as_rois_only(tmp_path, monkeypatch, capsys):
    import json
    from voxel_selection import load_roi_file
    seen = {}

    def fake_store(store, subject, roi_names=None, xfm=None):  # pycortex itself is not installed here
        seen.update(store=store, subject=subject, roi_names=roi_names, xfm=xfm)
        return {"AC": [4, 1], "Broca": [2]}
    monkeypatch.setattr(pycortex_rois, "rois_from_store", fake_store)
    out = tmp_path / "rois" / "UTS03.json"
    assert pycortex_rois.main(["--data-dir", "/data/ds003020", "--subject", "3", "--out", str(out),
                               "--rois", "AC", "Broca"]) == 0
    assert seen == {"store": Path("/data/ds003020/derivative/pycortex-db"), "subject": "UTS03",
                    "roi_names": ["AC", "Broca"], "xfm": None}
    record = json.loads(out.read_text())["_made_by"]
    assert {k: record[k] for k in ("data_dir", "subject", "xfm", "rois")} == {
        "data_dir": "/data/ds003020", "subject": "UTS03", "xfm": "UTS03_auto", "rois": ["AC", "Broca"]}
    assert record["versions"]["numpy"] == np.__version__
    rois = load_roi_file(out, n_voxels=5, subject="UTS03")
    assert sorted(rois) == ["AC", "Broca"] and rois["AC"].tolist() == [1, 4]
    from data_utils import DataError
    with pytest.raises(DataError, match="UTS03.json: ROIs of subject 'UTS03', expected 'UTS01'"):
        load_roi_file(out, n_voxels=5, subject="UTS01")  # the file names its subject
    assert "2 ROIs written" in capsys.readouterr().out


def test_rois_from_store_asks_pycortex_for_the_thick_mask_and_cortical_roi_volumes(tmp_path, monkeypatch, capsys):
    import sys
    import types
    mask = np.zeros((2, 2, 3), bool)
    mask[0, 0, 1] = mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 1, 1] = True  # columns 0, 1, 2, 3 in C order
    ac, broca = np.zeros((2, 2, 3)), np.zeros((2, 2, 3))
    ac[1, 1, 1] = 3.0  # sampler weights, not booleans: any positive weight is in the ROI
    ac[0, 0, 0] = 1.0  # outside the mask: no response column
    broca[0, 0, 1] = broca[0, 1, 2] = 1.0
    calls = {}

    class Database:  # the two calls of pycortex's API the script makes, recorded
        def __init__(self, path):
            calls["database"] = path

        def get_mask(self, subject, xfm, kind):
            calls["mask"] = (subject, xfm, kind)
            return mask

    def get_roi_masks(subject, xfm, roi_list=None, gm_sampler=None, split_lr=None, return_dict=None):
        calls["rois"] = dict(subject=subject, xfm=xfm, roi_list=roi_list, gm_sampler=gm_sampler, split_lr=split_lr,
                             return_dict=return_dict)
        return {"AC": ac, "Broca": broca}
    fake = types.SimpleNamespace(database=types.SimpleNamespace(Database=Database), db=None,
                                 utils=types.SimpleNamespace(get_roi_masks=get_roi_masks))
    monkeypatch.setitem(sys.modules, "cortex", fake)
    store = tmp_path / "derivative" / "pycortex-db"
    (store / "UTS03").mkdir(parents=True)
    assert pycortex_rois.rois_from_store(store, "UTS03", ["AC", "Broca"]) == {"AC": [3], "Broca": [0, 1]}
    assert calls == {"database": str(store), "mask": ("UTS03", "UTS03_auto", "thick"),
                     "rois": dict(subject="UTS03", xfm="UTS03_auto", roi_list=["AC", "Broca"], gm_sampler="cortical",
                                  split_lr=False, return_dict=True)}
    assert fake.database.default_filestore == str(store)
    pycortex_rois.rois_from_store(store, "UTS03", xfm="UTS03_manual")
    assert calls["mask"][1] == calls["rois"]["xfm"] == "UTS03_manual" and calls["rois"]["roi_list"] is None
    # a subject without a folder in the store: exit 3 naming the store and the subject, nothing written
    out = tmp_path / "UTS01.json"
    assert pycortex_rois.main(["--data-dir", str(tmp_path), "--subject", "1", "--out", str(out)]) == \
        pycortex_rois.EXIT_DATA
    assert f"error: {store}: no pycortex subject folder 'UTS01'" in capsys.readouterr().err and not out.exists()
