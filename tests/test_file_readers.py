import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from file_readers import (DataError, file_fingerprint, load_wav_16k, missing_file_message, npy_read_problem, read_tsv,
                          resample_to_16k)


def test_read_tsv_takes_a_spreadsheets_file_and_names_a_wrong_header(tmp_path):
    path = tmp_path / "labels.tsv"
    path.write_bytes("\ufeffpath\tlabel\r\n# a comment\r\n\r\nclip1.wav\t animal \r\nclip2.wav\tcity\r\n".encode())
    assert read_tsv(path, ["path", "label"]) == [(4, ["clip1.wav", "animal"]), (5, ["clip2.wav", "city"])]
    with pytest.raises(DataError, match=r"labels.tsv: expected header 'file<TAB>label', found \['path', 'label'\]"):
        read_tsv(path, ["file", "label"])
    path.write_text("# only a comment\n")
    with pytest.raises(DataError, match="labels.tsv: expected header 'path<TAB>label', found an empty file"):
        read_tsv(path, ["path", "label"])
    for encoding in ("utf-16", "utf-16-be"):  # Excel's "Unicode Text": UTF-16 with a byte-order mark, CRLF
        raw = "path\tlabel\r\nclip1.wav\tanimal\r\n".encode("utf-16-le" if encoding == "utf-16" else encoding)
        path.write_bytes((b"\xff\xfe" if encoding == "utf-16" else b"\xfe\xff") + raw)
        assert read_tsv(path, ["path", "label"]) == [(2, ["clip1.wav", "animal"])]
    path.write_bytes("path\tlabel\nclip1.wav\tcaf\u00e9\n".encode("latin-1"))  # neither: named, with the byte
    with pytest.raises(DataError, match=r"labels.tsv: expected UTF-8 \(or UTF-16 with a byte-order mark\) text, "
                                        r"found byte 0xe9 at offset 24: a damaged or binary file\? Save it as UTF-8"):
        read_tsv(path, ["path", "label"])
    with pytest.raises(DataError, match=r"nothere.tsv: file missing \(expected a tab-separated list with header "
                                        r"'path<TAB>label'\)"):
        read_tsv(tmp_path / "nothere.tsv", ["path", "label"])
    with pytest.raises(DataError, match=r": a folder, expected the tab-separated list with header 'path<TAB>label'; "
                                        r"it holds \['labels.tsv'\]$"):
        read_tsv(tmp_path, ["path", "label"])
    path.write_text(json.dumps({"auditory": list(range(5000))}))  # another kind of file: its start, not all of it
    with pytest.raises(DataError) as err:
        read_tsv(path, ["path", "label"])
    assert str(err.value).startswith(f"{path}: expected header 'path<TAB>label', found ['{{\"auditory\": [0, 1, 2, ")
    assert re.search(r"\.\.\. \(\d{5} characters\)$", str(err.value)) and len(str(err.value)) < 300


def test_stereo_is_mixed_to_the_mean_of_its_channels_and_a_bad_sample_is_timed_per_frame(tmp_path):
    t = np.arange(16000) / 16000
    left, right = np.sin(2 * np.pi * 220 * t), 0.5 * np.cos(2 * np.pi * 330 * t)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_wav_16k(path), (left + right) / 2, atol=1e-6)
    both = np.stack([left, right], axis=1)
    both[1600, 1] = np.nan  # the right channel at 0.1 s (row 1600, element 3201 of the interleaved samples)
    sf.write(str(path), both, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"stereo.wav: 1 audio sample\(s\) are NaN or inf, the first at 0.100 s"):
        load_wav_16k(path)


def test_a_file_replaced_by_one_of_the_same_size_is_not_read_from_the_cache(tmp_path):
    # the cache key is the file's identity (path, size, modification time), so an edited file is read again
    path, cache = tmp_path / "story.wav", tmp_path / "cache"
    first, second = np.full(8000, 0.25, np.float32), np.full(8000, -0.5, np.float32)
    sf.write(str(path), first, 16000, subtype="FLOAT")
    os.utime(path, ns=(10**18, 10**18))
    fingerprint = file_fingerprint(path)
    np.testing.assert_array_equal(load_wav_16k(path, cache), first)
    sf.write(str(path), second, 16000, subtype="FLOAT")  # same length, same size in bytes
    os.utime(path, ns=(10**18 + 10**9, 10**18 + 10**9))
    assert file_fingerprint(path) != fingerprint
    np.testing.assert_array_equal(load_wav_16k(path, cache), second)
    assert len(list((cache / "audio16k").glob("story-*.npy"))) == 2


def test_resampling_to_16k_keeps_a_tone_at_its_frequency_and_the_duration():
    rate, seconds = 44100, 0.5
    tone = np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
    out = resample_to_16k(tone, rate)
    assert out.dtype == np.float32 and len(out) == 8000  # 22050 samples at 44.1 kHz last 0.5 s = 8000 at 16 kHz
    expected = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=1e-3)  # away from the filter's edges
    same = resample_to_16k(np.linspace(-1, 1, 160), 16000)  # already 16 kHz: only made float32
    assert same.dtype == np.float32 and np.array_equal(same, np.linspace(-1, 1, 160, dtype=np.float32))


def test_missing_file_message_names_a_folder_given_for_a_file_with_what_it_holds(tmp_path):
    assert missing_file_message(tmp_path / "rois.npz", "ROI file") == f"{tmp_path / 'rois.npz'}: ROI file missing"
    (tmp_path / "UTS01").mkdir()
    for name in ("e.npy", "a.npy", "b.npy", "c.npy", "d.npy", "._a.npy"):  # an AppleDouble file is not named
        (tmp_path / "UTS01" / name).write_bytes(b"")
    assert (missing_file_message(tmp_path / "UTS01", "noise-ceiling file")
            == f"{tmp_path / 'UTS01'}: a folder, expected the noise-ceiling file; it holds "
               f"['a.npy', 'b.npy', 'c.npy', 'd.npy'] ...")
    (tmp_path / "empty").mkdir()
    assert missing_file_message(tmp_path / "empty", "ROI file").endswith("expected the ROI file; it holds no file")


def test_npy_read_problem_says_what_the_file_holds_instead_of_numpys_advice_to_unpickle(tmp_path):
    def problem(blob: bytes) -> str:
        path = tmp_path / "x.npy"
        path.write_bytes(blob)
        try:
            np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            return npy_read_problem(path, err)
        raise AssertionError("np.load read it")
    assert problem(b"") == "the file is empty"
    assert problem(b"a,b\n1,2\n") == ("not a .npy or .npz file: it starts with b'a,b\\n1,2\\n', where a .npy starts "
                                       "with b'\\x93NUMPY' and a .npz with b'PK'")
    assert "Git LFS pointer" in problem(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n")
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    try:
        np.load(tmp_path / "obj.npy", allow_pickle=False)
    except ValueError as err:
        assert npy_read_problem(tmp_path / "obj.npy", err).startswith("it holds pickled (object) arrays, which are never "
                                                                     "loaded")
