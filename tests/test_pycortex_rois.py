"""ROI columns from volumes, and the clear message when pycortex is absent."""
import importlib.util

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
