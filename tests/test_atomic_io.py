"""atomic_io: outputs written whole or not at all, failures named with the file and the free space."""
import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import atomic_io
import run_utils
from atomic_io import recover_dir, replace_dir, write_csv_atomic, write_json_atomic, write_text_atomic


def test_json_converts_numpy_and_paths(tmp_path):
    path = tmp_path / "sub" / "results.json"  # parent folders are created
    write_json_atomic(path, {"n": np.int64(3), "r": np.float32(0.5), "cc": np.arange(3), "out": Path("a/b")})
    assert json.loads(path.read_text()) == {"n": 3, "r": 0.5, "cc": [0, 1, 2], "out": "a/b"}
    assert type(json.loads(path.read_text())["n"]) is int  # a count stays an integer (3 == 3.0 in Python)


def test_failed_writes_leave_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}

    def dies_half_way(f):
        f.write('{"a": ')
        raise KeyboardInterrupt  # a kill in the middle of writing
    with pytest.raises(KeyboardInterrupt):
        atomic_io._write_atomic(path, dies_half_way)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_write_failing_for_lack_of_space_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    path = tmp_path / "nc.npy"
    atomic_io.save_npy_atomic(path, np.full(3, 0.5))

    def disk_full(f, array, allow_pickle):  # what numpy raises on a full disk: an OSError without errno or file
        f.write(b"\x93NUMPY")
        raise OSError("2000000 requested and 786400 written")
    monkeypatch.setattr(atomic_io.np, "save", disk_full)
    with pytest.raises(atomic_io.WriteError) as err:
        atomic_io.save_npy_atomic(path, np.zeros(3))
    message = str(err.value)
    assert message.startswith(f"{path}: could not be written (OSError: 2000000 requested and 786400 written); ")
    assert re.search(r"\d+\.\d+ [GM]B free on its file system", message)
    monkeypatch.undo()
    assert np.load(path).tolist() == [0.5, 0.5, 0.5]
    assert [p.name for p in tmp_path.iterdir()] == ["nc.npy"]  # the partial temp file removed

    def saves_results():  # a script's job whose output write fails: exit code 6 and the message, no traceback
        with atomic_io.writing(tmp_path / "best.tmp"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch.save
    assert run_utils.exit_code(saves_results) == run_utils.EXIT_WRITE == 6
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'best.tmp'}: could not be written (RuntimeError: ")


def test_writing_removes_the_partial_output_and_lets_other_errors_through(tmp_path):
    from safetensors import SafetensorError
    partial = tmp_path / "best.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    with pytest.raises(atomic_io.WriteError, match="No space left on device"):
        with atomic_io.writing(partial, partial=partial):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert not partial.exists()
    partial.write_bytes(b"half")  # a file is removed as well as a folder
    with pytest.raises(atomic_io.WriteError):
        with atomic_io.writing(partial, partial=partial):
            raise OSError(28, "No space left on device")
    assert not partial.exists()
    with pytest.raises(KeyError):  # a bug in the code that writes is not a full disk
        with atomic_io.writing(partial):
            raise KeyError("epoch")
    with pytest.raises(RuntimeError, match="share memory"):  # nor is safetensors refusing what it was given
        with atomic_io.writing(partial):
            raise RuntimeError("Some tensors share memory, this will lead to duplicate memory on disk and potential "
                               "differences when loading them again")


def test_reserve_space_allocates_a_sparse_file_or_says_how_much_it_needs(tmp_path, monkeypatch):
    path = tmp_path / "front_end.npy.partial"
    with open(path, "wb") as f:
        f.truncate(8 << 20)  # sparse, as a fresh memory map is: writing its pages could meet a full disk (SIGBUS)
    blocks_before = os.stat(path).st_blocks
    atomic_io.reserve_space(path)
    assert os.stat(path).st_blocks * 512 >= 8 << 20 > blocks_before * 512

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic_io.os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"No space left on device \(8\.4 MB needed\)"):
        atomic_io.reserve_space(path)

    def unsupported(fd, offset, length):  # a file system without fallocate: the free space is checked instead
        raise OSError(95, "Operation not supported")
    monkeypatch.setattr(atomic_io.os, "posix_fallocate", unsupported)
    atomic_io.reserve_space(path)  # this disk has 8 MB free
    monkeypatch.setattr(atomic_io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 << 20, 99 << 20, 1 << 20))
    with pytest.raises(OSError, match=r"8\.4 MB needed, 1\.0 MB free"):
        atomic_io.reserve_space(path)


def test_concurrent_writers_with_one_process_id_each_leave_a_whole_file(tmp_path, monkeypatch):
    # jobs on two hosts (or in two containers) writing the same cache entry on a shared file system can have the
    # same pid; two threads of this process stand in for them. A temp name made from the pid was shared by both:
    # one writer truncated the other's file or found its temp file gone at the rename.
    import threading
    monkeypatch.setattr(os, "getpid", lambda: 1)  # as in every container
    path, arrays = tmp_path / "story.npy", [np.full(4_000_000, k, np.float32) for k in (1, 2)]
    for _ in range(3):
        start, errors = threading.Barrier(2), []

        def write(a):
            start.wait()
            try:
                atomic_io.save_npy_atomic(path, a)
            except Exception as err:
                errors.append(err)
        threads = [threading.Thread(target=write, args=(a,)) for a in arrays]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors
        got = np.load(path)
        assert any(np.array_equal(got, a) for a in arrays)  # one writer's whole file, not a mixture
        assert [p.name for p in tmp_path.iterdir()] == ["story.npy"]


def test_array_files_round_trip_and_a_failed_write_keeps_the_old_file(tmp_path):
    atomic_io.save_npz_atomic(tmp_path / "layer_3.npz", r=np.arange(4.0), alphas=np.ones(4))
    with np.load(tmp_path / "layer_3.npz") as z:  # the name is kept as given (np.savez alone would add .npz)
        assert sorted(z.files) == ["alphas", "r"] and z["r"].tolist() == [0, 1, 2, 3]
    atomic_io.save_npy_atomic(tmp_path / "nc.npy", np.full(3, 0.5))
    with pytest.raises(ValueError):  # object arrays would need a pickle
        atomic_io.save_npy_atomic(tmp_path / "nc.npy", np.array([{"a": 1}], dtype=object))
    assert np.load(tmp_path / "nc.npy").tolist() == [0.5, 0.5, 0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer_3.npz", "nc.npy"]


def test_text_and_csv_round_trip(tmp_path):
    write_text_atomic(tmp_path / "table.md", "| a |\n|---|\n")
    assert (tmp_path / "table.md").read_text() == "| a |\n|---|\n"
    rows = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.25}]
    write_csv_atomic(tmp_path / "logs" / "history.csv", rows)
    with open(tmp_path / "logs" / "history.csv", newline="") as f:
        assert [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)] == rows
    write_csv_atomic(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_text() == ""


def test_replace_dir_swaps_and_recover_dir_finds_the_copy_a_kill_left(tmp_path):
    final = tmp_path / "checkpoint"
    for version in ("1", "2"):
        tmp = tmp_path / f"checkpoint.tmp{version}"
        tmp.mkdir()
        (tmp / "step").write_text(version)
        replace_dir(tmp, final)
        assert (final / "step").read_text() == version and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert recover_dir(final) == final
    # a kill between replace_dir's two renames: only checkpoint.old is there
    os.replace(final, tmp_path / "checkpoint.old")
    assert recover_dir(final) == tmp_path / "checkpoint.old"
    assert recover_dir(tmp_path / "never_written") is None


def test_files_written_together_replace_the_earlier_ones_only_when_every_write_succeeded(tmp_path, monkeypatch):
    data, record = tmp_path / "targets.npz", tmp_path / "targets.npz.json"
    writes = {data: lambda p: atomic_io.save_npz_atomic(p, x=np.arange(3)),
              record: lambda p: atomic_io.write_json_atomic(p, {"made": 1})}
    atomic_io.write_together(writes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.npz", "targets.npz.json"]
    assert json.loads(record.read_text()) == {"made": 1} and np.load(data)["x"].tolist() == [0, 1, 2]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls = []

    def second_fsync_fails(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic_io.os, "fsync", second_fsync_fails)
    with pytest.raises(atomic_io.WriteError, match=rf"^{re.escape(str(record))}: could not be written \(OSError: "
                                                   rf"\[Errno 28\] No space left on device\)"):  # its place's name
        atomic_io.write_together({data: lambda p: atomic_io.save_npz_atomic(p, x=np.arange(5)),
                                  record: lambda p: atomic_io.write_json_atomic(p, {"made": 2})})
    assert len(calls) == 2 and {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left
