"""Shared fixtures: one tiny miniature dataset per test session (built in ~4 s)."""
import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> Path:
    """Folder holding ds003020/, box/, subject_NCs/, rois/ and ground_truth/ of the tiny miniature."""
    from make_demo_data import build
    out = tmp_path_factory.mktemp("mini") / "miniature"
    os.environ["BRAIN_TUNING_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    build(out, seed=0, size="tiny", quiet=True)
    return out


@pytest.fixture(scope="session")
def mini_root(mini) -> Path:
    return mini / "ds003020"


FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """model_type -> folder of a tiny randomly initialised model (hidden 64, 2 layers) with its extractor."""
    from model_zoo import build_random_model
    base = tmp_path_factory.mktemp("models")
    return {t: str(build_random_model(t, base / t)) for t in FAMILIES}


@pytest.fixture(scope="session")
def nan_model(tiny_models, tmp_path_factory) -> str:
    """The tiny wav2vec2 with its last block's output projection set to NaN: hidden state 2 is NaN, 1 is not."""
    import shutil

    from safetensors.torch import load_file, save_file
    folder = shutil.copytree(tiny_models["wav2vec2"], tmp_path_factory.mktemp("nan") / "w2v")
    weights = load_file(folder / "model.safetensors")
    weights["encoder.layers.1.feed_forward.output_dense.weight"][:] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return str(folder)


@pytest.fixture(scope="session")
def downstream(tmp_path_factory) -> Path:
    """Tiny miniature downstream datasets: timit/, speech_commands/, crema_d/, slurp/, words/ (~3 s)."""
    from make_downstream_data import build
    return build(tmp_path_factory.mktemp("downstream") / "downstream", seed=0, size="tiny", quiet=True)


def link_tree(src: Path, dst: Path, without: tuple[str, ...] = ()) -> Path:
    """`dst` mirroring `src` with a symlink per file, less the relative paths in `without` (a dataset with a
    few files missing; nothing is ever written through to `src`)."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif str(rel) not in without:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, dst / rel)
    return dst


def hub_snapshot(hub_cache, repo: str, model_dir, commit: str, refs: tuple[str, ...] = ("main",)) -> None:
    """`model_dir`'s files as snapshot `commit` of hub repository `repo`, laid out as huggingface_hub's cache lays
    it out, with the branches or tags `refs` naming it: what `from_pretrained(repo, revision=ref)` reads offline."""
    repo_dir = hub_cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(commit)


def point_hub_cache(monkeypatch, hub_cache) -> None:
    """Make huggingface_hub and transformers read (offline) the hub cache folder `hub_cache` for this test;
    transformers 4.x copied the cache path into its own TRANSFORMERS_CACHE when imported."""
    from huggingface_hub import constants
    from transformers.utils import hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))  # read per call by 5.x and huggingface_hub
    if hasattr(hub, "TRANSFORMERS_CACHE"):
        monkeypatch.setattr(hub, "TRANSFORMERS_CACHE", str(hub_cache))


def torchrun_trainer(mini: Path, model: str, out: Path, tmp_path: Path, *extra: str, nproc: int = 2):
    """Run brain_trainer_story.py under `torchrun --standalone` with `nproc` CPU processes (one thread each) on the
    miniature's UTS01 (batch 16, `extra` flags added); returns the CompletedProcess (text output captured).
    TMPDIR is `tmp_path`, so torchrun's log folder (`torchelastic_*`, made with tempfile and never removed) stays
    out of /tmp."""
    import subprocess
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(repo / "brain_trainer_story.py"), "--data-dir", str(mini / "ds003020"), "--subject", "UTS01",
           "--model-name", model, "--nc-dir", str(mini / "subject_NCs"), "--out-dir", str(out), "--batch-size", "16",
           "--no-progress", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def probe_args(model, data, out, cache, *extra) -> list[str]:
    """The arguments of eval_phonemes.py / eval_downstream.py for one model, its --out and feature cache."""
    return ["--data-dir", str(data), "--model-name", model, "--out", str(out), "--cache-dir", str(cache),
            "--no-progress", *extra]


def killed_at_fit(monkeypatch, n: int, run, out: Path) -> list:
    """Call `run()`, killed (KeyboardInterrupt) at probes.fit_linear_probe's n-th call, and check that it left layer
    1's result alone in `out`. Returns a list, empty now, that counts the calls from then on (no more kills)."""
    import probes
    import run_utils
    fit, calls, kill = probes.fit_linear_probe, [], [True]

    def counted(*a, **k):
        calls.append(1)
        if kill[0] and len(calls) == n:
            raise KeyboardInterrupt
        return fit(*a, **k)
    monkeypatch.setattr(probes, "fit_linear_probe", counted)
    assert run() == run_utils.EXIT_INTERRUPTED  # the script's line and exit code, not a traceback
    assert sorted(p.name for p in out.iterdir() if p.name != run_utils.RUN_LOCK) == ["layer_1.json"]
    kill[0] = False
    calls.clear()
    return calls
