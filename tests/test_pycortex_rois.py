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
