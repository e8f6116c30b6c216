"""Run bookkeeping: run records, output folders and their claims, device and precision flags, seeds, exit codes."""
import argparse
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import run_utils
from atomic_io import write_json_atomic, write_text_atomic
from run_utils import (check_replaceable, model_run_usage_problem, read_result_json, resolve_device, resolve_precision,
                       set_seed)


def test_read_result_json_names_the_file_and_what_is_wrong(tmp_path):
    write_json_atomic(tmp_path / "ok" / "summary.json", {"per_layer": {}, "upper_middle_mean": {"all": 0.2}})
    keys = ("per_layer", "upper_middle_mean")
    assert read_result_json(tmp_path / "ok", "summary.json", "brain_evaluate.py", keys)["upper_middle_mean"] == {
        "all": 0.2}
    with pytest.raises(FileNotFoundError, match=r"empty/summary.json: not a brain_evaluate.py result folder"):
        read_result_json(tmp_path / "empty", "summary.json", "brain_evaluate.py", keys)
    write_text_atomic(tmp_path / "cut" / "summary.json", '{"per_layer": {')  # a file cut short
    with pytest.raises(ValueError, match=r"cut/summary.json: not valid JSON"):
        read_result_json(tmp_path / "cut", "summary.json", "brain_evaluate.py", keys)
    for bad in ({"per_layer": {}}, [1, 2]):
        write_json_atomic(tmp_path / "bad" / "summary.json", bad)
        with pytest.raises(ValueError,
                           match=r"bad/summary.json: expected the keys .* missing \[.*'upper_middle_mean'\]"):
            read_result_json(tmp_path / "bad", "summary.json", "brain_evaluate.py", keys)
    # values of another kind (a hand edit, another tool's file) are named, not a traceback in --compare's table
    kinds = {"number_maps": ("upper_middle_mean",), "objects": ("per_layer",)}
    for bad, message in (({"per_layer": [], "upper_middle_mean": {}}, r"'per_layer' should be an object, .* found list"),
                         ({"per_layer": {}, "upper_middle_mean": 0.2}, r"'upper_middle_mean' should be an object"),
                         ({"per_layer": {}, "upper_middle_mean": {"all": None, "language": 0.1}},
                          r"'upper_middle_mean' should map names to numbers, as brain_evaluate.py writes it; "
                          r"found \{'all': None\}"),
                         ({"per_layer": {}, "upper_middle_mean": {"all": "0.2"}}, r".* found \{'all': '0.2'\}"),
                         ({"per_layer": {}, "upper_middle_mean": {"all": True}}, r".* found \{'all': True\}")):
        write_json_atomic(tmp_path / "bad" / "summary.json", bad)
        with pytest.raises(ValueError, match=r"bad/summary.json: " + message):
            read_result_json(tmp_path / "bad", "summary.json", "brain_evaluate.py", keys, **kinds)
    # NaN (an ROI without voxels above the floor) is a number, as the evaluation writes it
    write_json_atomic(tmp_path / "nan" / "summary.json", {"per_layer": {}, "upper_middle_mean": {"all": float("nan")}})
    assert np.isnan(read_result_json(tmp_path / "nan", "summary.json", "brain_evaluate.py", keys, **kinds)
                    ["upper_middle_mean"]["all"])


def test_the_recorded_command_reruns_from_its_folder_with_its_arguments(tmp_path, monkeypatch):
    # relative paths in a run's command mean nothing without the folder it ran in; "a b" was recorded as two words
    folder = tmp_path / "my runs"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["brain_evaluate.py", "--data-dir", "data/ds003020", "--out", "a b"])
    line = run_utils.command_line()
    assert shlex.split(line) == ["cd", str(folder), "&&", Path(sys.executable).name, "brain_evaluate.py",
                                 "--data-dir", "data/ds003020", "--out", "a b"]
    echoed = subprocess.run(["bash", "-c", line.replace(Path(sys.executable).name, "printf '%s|'", 1)],
                            capture_output=True, text=True, check=True).stdout
    assert echoed == "brain_evaluate.py|--data-dir|data/ds003020|--out|a b|"


def test_check_replaceable_refuses_folders_that_are_not_an_earlier_output(tmp_path):
    check_replaceable(tmp_path / "missing", ("config.json",), "run")  # nothing there: fine
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", ("config.json",), "run")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "notes.txt").write_text("x")
    check_replaceable(run, ("config.json",), "run")  # an earlier run: may be replaced
    home = tmp_path / "home"
    home.mkdir()
    for name in ("thesis.tex", "data", "a", "b", "c", "d"):
        (home / name).write_text("precious")
    with pytest.raises(FileExistsError, match=r"home: not a run \(expected one of \['config.json'\] inside, found "
                                              r"\['a', 'b', 'c', 'd', 'data'\]\.\.\.\); refusing to replace it"):
        check_replaceable(home, ("config.json",), "run")
    with pytest.raises(FileExistsError, match="thesis.tex: is a file, not a run; refusing"):
        check_replaceable(home / "thesis.tex", ("config.json",), "run")
    check_replaceable(home, (), "run", is_output=lambda d: (d / "thesis.tex").is_file())  # the predicate decides
    with pytest.raises(FileExistsError, match="home: not a run"):
        check_replaceable(home, (), "run", is_output=lambda d: False)


def test_exit_code_prints_a_stop_and_returns_its_code_and_lets_other_errors_through(capsys):
    assert run_utils.exit_code(lambda: 0) == 0
    assert capsys.readouterr().err == ""

    def refused():
        raise run_utils.Stop("data/x.hf5: expected 3 rows, found 2", run_utils.EXIT_DATA)
    assert run_utils.exit_code(refused) == run_utils.EXIT_DATA == 3
    assert capsys.readouterr().err == "error: data/x.hf5: expected 3 rows, found 2\n"

    def broken():  # a bug is a traceback, not a refusal dressed as one
        raise KeyError("x")
    with pytest.raises(KeyError):
        run_utils.exit_code(broken)


def test_ctrl_c_and_sigterm_end_the_job_with_a_line_and_their_exit_codes(capsys):
    import signal

    def pressed():
        raise KeyboardInterrupt
    assert run_utils.exit_code(pressed) == run_utils.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.startswith("error: interrupted (Ctrl-C); what was written before is whole")
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []

    def preempted():  # a cluster's time limit: the signal arrives mid-job, the job's cleanups still run
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        finally:
            cleaned.append(True)
    assert run_utils.exit_code(preempted) == run_utils.EXIT_TERMINATED == 143 and cleaned == [True]
    assert "error: interrupted (SIGTERM)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the job's only


def test_exit_code_names_the_flag_to_lower_when_the_device_runs_out_of_memory(capsys):
    def too_big():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB. GPU 0 has a total capacity "
                                     "of 79.10 GiB\nOf the allocated memory ...")
    assert run_utils.exit_code(too_big, out_of_memory="lower --batch-size (now 16)") == run_utils.EXIT_USAGE
    assert capsys.readouterr().err == ("error: the device ran out of memory (CUDA out of memory. Tried to allocate "
                                       "3.00 GiB. GPU 0 has a total capacity of 79.10 GiB): lower --batch-size (now 16)\n")
    with pytest.raises(torch.OutOfMemoryError):  # a script that names no flag: torch's own traceback
        run_utils.exit_code(too_big)

    def other_runtime_error():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="shapes"):
        run_utils.exit_code(other_runtime_error, out_of_memory="lower --batch-size")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=3) == torch.device("cuda:3")  # torchrun: each process its own GPU


def test_resolve_precision():
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_model_run_usage_problem(tmp_path):
    from argparse import Namespace
    run = dict(data_dir="d", subject="UTS01", model_name=["m1", "m2"], out=["a", "b"], revision="main")
    assert model_run_usage_problem(Namespace(**run), ("data_dir", "subject", "model_name")) is None
    assert model_run_usage_problem(Namespace(**{**run, "data_dir": None, "subject": None}),
                                   ("data_dir", "subject", "model_name")) == \
        "missing --data-dir, --subject (required unless --compare DIR...)"
    assert model_run_usage_problem(Namespace(**{**run, "out": ["a"]}), ("data_dir",)) == \
        "expected one --out folder per --model-name (2), found 1"
    # the same folder twice (also spelt differently): the second model's results replaced the first's
    assert model_run_usage_problem(Namespace(**{**run, "out": ["res/a", "res/../res/a"]}), ("data_dir",)) == \
        "--out names one folder for several models (res/../res/a, res/a); expected a folder per --model-name"
    # a revision for local folders only would be ignored; among hub ids it applies to them
    (tmp_path / "m1").mkdir()
    local = {**run, "model_name": [str(tmp_path / "m1")], "out": ["a"], "revision": "v1"}
    assert model_run_usage_problem(Namespace(**local), ("data_dir",)) == \
        f"--revision v1 names a hub revision, but {tmp_path / 'm1'} is a local folder: it has one version and would " \
        "be loaded as it is"
    assert model_run_usage_problem(Namespace(**{**local, "model_name": [str(tmp_path / "m1"), "org/m2"],
                                                "out": ["a", "b"]}), ("data_dir",)) is None


def test_set_seed_repeats_python_numpy_and_torch_draws():
    import random
    draws = []
    for _ in range(2):
        set_seed(7)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    set_seed(8)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != draws[0]


def test_package_versions_names_what_shapes_results():
    versions = run_utils.package_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert versions["numpy"] == np.__version__
    assert set(run_utils.PACKAGES) <= set(versions)
    assert set(versions["toolkit"]) == {"commit", "modified"}
    assert versions["cpu"] == run_utils.cpu_identity() and versions["cpu"]["capability"] == (
        torch.backends.cpu.get_cpu_capability())


INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu avx512f

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Another Xeon
"""


def test_cpu_identity_reads_the_first_processor_of_cpuinfo():
    assert run_utils.cpu_identity(INTEL_CPUINFO, "AVX512") == {
        "vendor": "GenuineIntel", "family": 6, "model": 207, "name": "Intel(R) Xeon(R) Processor",
        "capability": "AVX512"}
    amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC: 7B13\n"
    assert run_utils.cpu_identity(amd, "AVX2") == {"vendor": "AuthenticAMD", "family": 25, "model": 1,
                                                  "name": "AMD EPYC: 7B13", "capability": "AVX2"}  # ':' in a name
    # an ARM or unknown cpuinfo: what is missing is None, never a guess
    empty = run_utils.cpu_identity("processor\t: 0\nBogoMIPS\t: 50.00\nmodel\t\t: unknown\n", "DEFAULT")
    assert (empty["vendor"], empty["family"], empty["model"], empty["capability"]) == (None, None, None, "DEFAULT")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_toolkit_version_is_the_checkout_commit_and_says_when_tracked_files_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # never the checkout around tmp_path
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()
    assert run_utils.toolkit_version(tmp_path) == {"commit": None, "modified": None}  # not a checkout
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "code.py")
    git("commit", "-q", "-m", "one")
    assert run_utils.toolkit_version(tmp_path) == {"commit": git("rev-parse", "HEAD"), "modified": False}
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert run_utils.toolkit_version(tmp_path)["modified"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert run_utils.toolkit_version(tmp_path)["modified"] is True


@pytest.mark.parametrize("script", ["brain_trainer_story", "brain_evaluate", "eval_downstream", "eval_phonemes"])
def test_help_shows_defaults_but_no_empty_ones(script, capsys):
    import importlib
    module = importlib.import_module(script)
    parse = getattr(module, "parse_args", None) or (lambda argv: module.main(argv))
    with pytest.raises(SystemExit) as done:
        parse(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: auto)" in text and "(default: 0)" in text  # --device, --seed


def test_a_device_the_machine_lacks_is_a_usage_error(monkeypatch):
    import torch

    from run_utils import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda:2: this machine has 2 usable CUDA GPU"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="--device gpu: not a device .*expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    for other in ("mps", "xpu", "meta"):  # devices torch names; without this they crashed mid-run with a traceback
        with pytest.raises(ValueError, match=f"--device {other}: {other} devices are not supported .*expected auto"):
            resolve_device(other)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda: this machine has 0 usable CUDA GPU\(s\) \(or torch was built"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_scripts_refuse_a_revision_for_local_folders_before_writing(mini, downstream, tiny_models, tmp_path, capsys):
    import brain_evaluate
    import brain_trainer_story
    import eval_phonemes
    import make_teacher_targets
    model, data = tiny_models["hubert"], str(mini / "ds003020")
    common = ["--data-dir", data, "--subject", "UTS01", "--model-name", model, "--revision", "v1", "--no-progress"]
    runs = {"trainer": lambda: brain_trainer_story.main([*common, "--out-dir", str(tmp_path / "t")]),
            "evaluate": lambda: brain_evaluate.main([*common, "--out", str(tmp_path / "e")]),
            "probes": lambda: eval_phonemes.main(["--data-dir", str(downstream / "timit"), "--model-name", model,
                                                  "--revision", "v1", "--out", str(tmp_path / "p")]),
            "teacher": lambda: make_teacher_targets.main(["--data-dir", data, "--model-name", model, "--layer", "1",
                                                          "--revision", "v1", "--out", str(tmp_path / "x.npz")])}
    for name, main in runs.items():
        assert main() == run_utils.EXIT_USAGE, name
        assert f"--revision v1 names a hub revision, but {model} is a local folder" in capsys.readouterr().err, name
    assert make_teacher_targets.main(["--data-dir", data, "--word-embedding", "english1000", "--revision", "v1",
                                      "--out", str(tmp_path / "x.npz")]) == run_utils.EXIT_USAGE
    assert "--revision chooses a model teacher's hub revision" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_scripts_refuse_a_missing_gpu_before_writing(mini, tiny_models, tmp_path, capsys, monkeypatch):
    import torch

    import brain_evaluate
    import brain_trainer_story
    import eval_downstream
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    common = ["--data-dir", str(mini / "ds003020"), "--subject", "UTS01", "--model-name", tiny_models["hubert"],
              "--device", "cuda", "--no-progress"]
    assert brain_trainer_story.main([*common, "--out-dir", str(tmp_path / "t")]) == 2
    assert brain_evaluate.main([*common, "--out", str(tmp_path / "e")]) == 2
    assert eval_downstream.main(["--task", "commands", "--data-dir", str(tmp_path), "--model-name",
                                 tiny_models["hubert"], "--out", str(tmp_path / "p"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.count("--device cuda: this machine has 0 usable CUDA GPU(s)") == 3
    assert not any((tmp_path / d).exists() for d in ("t", "e", "p"))


def test_writable_dir_problem_names_a_file_in_the_way_and_creates_nothing(tmp_path, monkeypatch):
    new = tmp_path / "a" / "cache"
    assert run_utils.writable_dir_problem(new, "the cache") is None and not (tmp_path / "a").exists()
    assert run_utils.writable_dir_problem(tmp_path, "the cache") is None
    (tmp_path / "f").write_text("x")
    assert run_utils.writable_dir_problem(tmp_path / "f", "--cache-dir") == f"{tmp_path / 'f'}: --cache-dir must be a " \
        f"folder, found a file"
    assert run_utils.writable_dir_problem(tmp_path / "f" / "sub", "the cache") == (
        f"{tmp_path / 'f' / 'sub'}: the cache cannot be created: {tmp_path / 'f'} is a file")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission there
    assert run_utils.writable_dir_problem(tmp_path, "the cache") == f"{tmp_path}: the cache: no write permission"


def test_scripts_refuse_a_cache_they_cannot_write_before_any_work(mini, downstream, tiny_models, tmp_path, capsys,
                                                                  monkeypatch):
    # A cache path naming a file ($BRAIN_TUNING_CACHE or a flag) was a traceback when the first result was saved.
    import brain_evaluate
    import brain_trainer_story
    import eval_phonemes
    import make_teacher_targets
    (tmp_path / "file").write_text("x")
    common = ["--data-dir", str(mini / "ds003020"), "--model-name", tiny_models["hubert"], "--no-progress"]
    evaluate = [*common, "--subject", "UTS01", "--nc-dir", str(mini / "subject_NCs"), "--out", str(tmp_path / "e")]
    assert brain_evaluate.main([*evaluate, "--cache-dir", str(tmp_path / "file")]) == 2
    assert f"{tmp_path / 'file'}: the feature cache (--cache-dir) must be a folder, found a file" in capsys.readouterr().err
    assert brain_trainer_story.main([*common, "--subject", "UTS01", "--nc-dir", str(mini / "subject_NCs"),
                                     "--out-dir", str(tmp_path / "t"), "--cache-front-end",
                                     "--front-end-cache-dir", str(tmp_path / "file")]) == 2
    assert f"{tmp_path / 'file'}: --front-end-cache-dir must be a folder, found a file" in capsys.readouterr().err
    assert eval_phonemes.main(["--data-dir", str(downstream / "timit"), "--model-name", tiny_models["hubert"],
                               "--out", str(tmp_path / "p"), "--cache-dir", str(tmp_path / "file")]) == 2
    assert "the feature cache (--cache-dir) must be a folder, found a file" in capsys.readouterr().err
    monkeypatch.setenv("BRAIN_TUNING_CACHE", str(tmp_path / "file"))  # the resampled audio's cache
    assert brain_evaluate.main(evaluate) == 2
    assert brain_trainer_story.main([*common, "--subject", "UTS01", "--nc-dir", str(mini / "subject_NCs"),
                                     "--out-dir", str(tmp_path / "t")]) == 2
    assert make_teacher_targets.main([*common, "--layer", "1", "--out", str(tmp_path / "m.npz")]) == 2
    assert capsys.readouterr().err.count(f"{tmp_path / 'file' / 'audio16k'}: the resampled-audio cache") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_creatable_problem_names_a_file_in_the_way_or_a_folder_without_permission(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    assert run_utils.creatable_problem(tmp_path / "a" / "b", "--out") is None
    assert not (tmp_path / "a").exists()  # nothing created
    assert run_utils.creatable_problem(tmp_path / "f" / "a" / "b", "--out") == (
        f"{tmp_path / 'f' / 'a' / 'b'}: --out cannot be created: {tmp_path / 'f'} is a file")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission there
    assert run_utils.creatable_problem(tmp_path / "a", "--out") == (
        f"{tmp_path / 'a'}: --out cannot be created: no write permission in {tmp_path}")


def test_scripts_refuse_an_output_that_cannot_be_created_before_any_work(mini, downstream, tiny_models, tmp_path,
                                                                          capsys):
    # An --out under a file (a mistyped path) was a traceback when the results were saved, the work lost.
    import brain_evaluate
    import brain_trainer_story
    import compute_noise_ceiling
    import eval_phonemes
    import make_demo_data
    import make_teacher_targets
    import run_demo
    import whisper_ct2
    (tmp_path / "file").write_text("x")
    under = tmp_path / "file" / "out"
    data = ["--data-dir", str(mini / "ds003020")]
    model = ["--model-name", tiny_models["hubert"], "--no-progress"]
    for main, argv in ((brain_evaluate.main, [*data, *model, "--subject", "UTS01", "--out", str(under)]),
                       (brain_trainer_story.main, [*data, *model, "--subject", "UTS01", "--out-dir", str(under)]),
                       (eval_phonemes.main, ["--data-dir", str(downstream / "timit"), *model, "--out", str(under)]),
                       (make_teacher_targets.main, [*data, "--word-embedding", "english1000", "--out",
                                                    str(under / "t.npz")]),
                       (compute_noise_ceiling.main, [*data, "--subject", "UTS01", "--out", str(under)]),
                       (run_demo.main, ["--out", str(under), "--quick"]),
                       (run_demo.main, ["--out", str(tmp_path / "demo"), "--data", str(under), "--quick"]),
                       (make_demo_data.main, ["--out", str(under), "--size", "tiny"]),
                       (whisper_ct2.main, ["--out", str(under)])):
        assert main(argv) == 2, argv
        assert f"cannot be created: {tmp_path / 'file'} is a file" in capsys.readouterr().err, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_array_digest_names_content_type_and_shape():
    from run_utils import array_digest
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert array_digest(a, {"x": 1}) == array_digest(a.copy(), {"x": 1})
    assert array_digest(a[:, ::2]) == array_digest(np.ascontiguousarray(a[:, ::2]))  # a view: its values
    others = [a.reshape(4, 3), a.view(np.int32), a + 1e-6, a.T]  # same bytes other shape, dtype; other values
    assert len({array_digest(x) for x in [a, *others]}) == 5
    assert array_digest(a, "x") != array_digest("x", a) and array_digest(a, {"x": 1}) != array_digest(a, {"x": 2})
    empty = [np.zeros((0, 4), np.float32), np.zeros((4, 0), np.float32), np.zeros(0, np.float32)]  # no rows left
    assert len({array_digest(x) for x in empty}) == 3  # digested by their shapes, not refused


def test_number_types_read_numbers_in_range_and_refuse_the_rest():
    assert run_utils.positive_int("3") == 3 and run_utils.nonnegative_int("0") == 0
    assert run_utils.positive_float("5e-4") == 5e-4 and run_utils.nonnegative_float("0") == 0.0
    assert run_utils.fraction("0") == 0.0 and run_utils.fraction("0.4") == 0.4
    for parse, text in ((run_utils.positive_int, "0"), (run_utils.positive_int, "-2"), (run_utils.positive_int, "1.5"),
                        (run_utils.nonnegative_int, "-1"), (run_utils.positive_float, "0"),
                        (run_utils.positive_float, "-1e-4"), (run_utils.positive_float, "nan"),
                        (run_utils.positive_float, "inf"), (run_utils.nonnegative_float, "-0.5"),
                        (run_utils.fraction, "1"), (run_utils.fraction, "-0.1"), (run_utils.fraction, "x")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected .*, found '?{re.escape(text)}"):
            parse(text)


@pytest.mark.parametrize("script, argv", [
    ("brain_trainer_story", ["--lr", "-1"]),  # ran to the end, ascending the gradient
    ("brain_trainer_story", ["--lora-rank", "0"]),  # ran to the end, tuning the full model instead
    ("brain_trainer_story", ["--head-rank", "0"]),  # ran to the end with a full-rank head
    ("brain_trainer_story", ["--micro-batch-size", "0"]),  # taken as unset
    ("brain_trainer_story", ["--warmup-fraction", "2"]),
    ("brain_trainer_story", ["--batch-size", "0"]),  # ZeroDivisionError
    ("brain_trainer_story", ["--num-epochs", "0"]),  # a TypeError traceback at the end of the run
    ("brain_trainer_story", ["--patience", "0"]),
    ("brain_trainer_story", ["--lora-dropout", "1.5"]),
    ("brain_trainer_story", ["--nc-threshold", "-1"]),
    ("brain_trainer_story", ["--seed", "-1"]),
    ("brain_evaluate", ["--stride", "0"]),  # ZeroDivisionError
    ("brain_evaluate", ["--stride", "-1"]),  # ran to the end on empty windows
    ("brain_evaluate", ["--context", "-2"]),
    ("brain_evaluate", ["--batch-size", "0"]),
    ("brain_evaluate", ["--tr", "nan"]),
    ("brain_evaluate", ["--nc-floor", "1"]),
    ("brain_evaluate", ["--seed", "-1"]),  # a numpy ValueError traceback
    ("eval_downstream", ["--folds", "1"]),
    ("eval_downstream", ["--context", "-1"]),
    ("eval_phonemes", ["--frame-step", "0"]),
    ("make_teacher_targets", ["--context-words", "-1"]),
    ("make_demo_data", ["--tr", "0"]),
    ("make_downstream_data", ["--seed", "-3"]),
    ("run_demo", ["--seeds", "0", "-1"]),
])
def test_scripts_refuse_numbers_out_of_range_as_usage_errors_naming_the_flag(script, argv, capsys, tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)  # a script that took the value would write its default outputs here
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as stopped:
        module.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == run_utils.EXIT_USAGE and f"argument {argv[0]}: expected " in err, err


@pytest.mark.parametrize("script", ["brain_trainer_story", "brain_evaluate", "compute_noise_ceiling", "pycortex_rois",
                                    "data_utils"])
def test_a_subject_that_is_not_a_subject_id_is_a_usage_error_in_every_script(script, capsys, tmp_path, monkeypatch):
    # compute_noise_ceiling.py and pycortex_rois.py stopped on a DataError traceback (exit 1), brain_evaluate.py
    # and data_utils.py with exit 3 as if the data were at fault
    monkeypatch.chdir(tmp_path)
    argv = ["--data-dir", str(tmp_path), "--subject", "S1", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(script).main(argv if script != "data_utils" else argv[:4])
    err = capsys.readouterr().err
    assert stopped.value.code == run_utils.EXIT_USAGE, err
    assert "argument --subject: subject must look like 'UTS03' or '3', found 'S1'" in err, err
    assert list(tmp_path.iterdir()) == []


def test_output_claim_holds_a_folder_for_one_writer_and_ends_with_the_process(tmp_path):
    out = tmp_path / "run"
    with run_utils.output_claim(out, "brain-tuning run") as busy:
        assert busy is None and (out / run_utils.RUN_LOCK).read_text().startswith(f"pid {os.getpid()} on ")
        with run_utils.output_claim(out, "brain-tuning run") as second:  # another open file: another writer
            assert second.startswith(f"{out}: another brain-tuning run is writing into it (pid {os.getpid()} on ")
        (out / "config.json").write_text("{}")
    assert (out / run_utils.RUN_LOCK).is_file()  # kept beside the run's files, and not counted as one of them
    check_replaceable(out, ("config.json",), "run")
    (out / "config.json").unlink()
    check_replaceable(out, (), "run")  # a folder holding only the claim file counts as empty
    with run_utils.output_claim(out, "brain-tuning run") as again:  # released when the block ended
        assert again is None
    assert out.is_dir()  # a folder it did not create is kept, however empty
    with run_utils.output_claim(tmp_path / "new", "run") as busy:  # a run refused after the claim leaves no trace
        assert busy is None and (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()
    with run_utils.output_claim(tmp_path / "off", "run", enabled=False) as busy:  # torchrun ranks > 0
        assert busy is None and not (tmp_path / "off").exists()
    # another process's claim; gone when that process is killed (no stale claim after a kill -9)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, run_utils\n"
                               f"with run_utils.output_claim({str(out)!r}, 'run'):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              cwd=Path(run_utils.__file__).parent, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with run_utils.output_claim(out, "run") as busy:
            assert f"(pid {holder.pid} on " in busy
    finally:
        holder.kill()
        holder.wait()
    with run_utils.output_claim(out, "run") as busy:
        assert busy is None


def test_output_claims_hold_every_folder_or_none(tmp_path):
    held = tmp_path / "held"
    with run_utils.output_claim(held, "run"):
        with run_utils.output_claims([tmp_path / "a", held, tmp_path / "b"], "run") as busy:
            assert busy.startswith(f"{held}: another run is writing into it")
            assert not (tmp_path / "b").exists()  # not claimed after the refusal
        assert not (tmp_path / "a").exists()  # claimed before it, released and removed (this call created it)
        with run_utils.output_claims([tmp_path / "a", tmp_path / "b"], "run") as busy:
            assert busy is None
            with run_utils.output_claim(tmp_path / "b", "run") as second:  # both are held while the block runs
                assert second is not None
            (tmp_path / "a" / "summary.json").write_text("{}")
    assert (tmp_path / "a" / "summary.json").is_file() and not (tmp_path / "b").exists()
    with run_utils.output_claims([tmp_path / "a", tmp_path / "." / "a"], "run") as busy:  # one folder, named twice
        assert busy is None


def test_output_claims_claim_a_folder_spelled_two_ways_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    for spellings in (["a", tmp_path / "a"], [tmp_path / "x" / ".." / "a", "a"]):  # relative, absolute, with ..
        with run_utils.output_claims(spellings, "run") as busy:
            assert busy is None


def test_output_dirs_problem_names_another_programs_folder_and_one_this_job_cannot_write(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    assert run_utils.output_dirs_problem([tmp_path / "new", tmp_path / "done"], ("summary.json",), "result") is None
    problem = run_utils.output_dirs_problem([tmp_path / "done", tmp_path / "model"], ("summary.json",), "result")
    assert problem.startswith(f"{tmp_path / 'model'}: not a result (expected one of ['summary.json'] inside, found "
                              "['config.json'])")
    # a results folder this job may not write (root passes os.access, so the check is made to say no)
    real_access = os.access
    monkeypatch.setattr(run_utils.os, "access", lambda p, mode: Path(p) != tmp_path / "done" and real_access(p, mode))
    assert run_utils.output_dirs_problem([tmp_path / "new", tmp_path / "done"], ("summary.json",), "result") == \
        f"{tmp_path / 'done'}: a result folder: no write permission"


def test_out_among_inputs_sees_one_folder_however_it_is_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tuned").mkdir()
    assert run_utils.out_among_inputs("./tuned/", [tmp_path / "pretrained", tmp_path / "tuned"]) == \
        "--out ./tuned/ is one of the compared result folders; choose another"
    assert run_utils.out_among_inputs("tuned2", ["tuned", "pretrained"]) is None




def test_first_few_lists_n_items_and_marks_the_rest():
    assert run_utils.first_few(["souls", "avatar"]) == "souls, avatar"
    assert run_utils.first_few(["a", "b", "c", "d"]) == "a, b, c ..."
    assert run_utils.first_few([1, 2, 3, 4, 5], 4) == "1, 2, 3, 4 ..."
