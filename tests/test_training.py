import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

import training
from atomic_io import WriteError

from training import StoryData, WindowDataset, _distant_permutation, apply_target_control, brain_loss, warmup_linear_decay
from timing import simulated_tr_grid


def _story(name, n_rows, n_vox=4, seed=0, resp=40):
    rng = np.random.default_rng(seed)
    grid = simulated_tr_grid(resp, 2.0)
    return StoryData(name, rng.normal(size=16000 * (2 * resp - 20)).astype(np.float32), grid,
                     rng.normal(size=(n_rows, n_vox)).astype(np.float32))


def test_window_dataset_pairs_row_j_with_the_window_ending_at_tr_j_plus_10():
    s = _story("a", 20)
    s.wav[:] = np.arange(len(s.wav)) / 16000.0  # sample value = its time in seconds
    ds = WindowDataset([s])
    inputs, target = ds[3]
    wav = inputs["wav"]
    # TR 13 ends at 13*2 - 10 + 2 = 18 s; the window covers 5 TRs = 10 s: [8, 18) s
    assert wav.shape == (160000,)
    assert wav[-1].item() == pytest.approx(18.0 - 1 / 16000, abs=1e-4)
    assert wav[0].item() == pytest.approx(8.0, abs=1e-4)
    np.testing.assert_array_equal(target.numpy(), s.targets[3])
    first = ds.window(0)  # TR 10 ends at 12 s: window [2, 12) s, no padding needed
    assert first[0].item() == pytest.approx(2.0, abs=1e-4)


def test_losses_against_numpy():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    pt, tt = torch.tensor(p), torch.tensor(t)
    assert brain_loss(pt, tt, "mse").item() == pytest.approx(((p - t) ** 2).mean(), rel=1e-5)
    spatial = np.mean([np.corrcoef(p[i], t[i])[0, 1] for i in range(6)])
    temporal = np.mean([np.corrcoef(p[:, v], t[:, v])[0, 1] for v in range(5)])
    assert brain_loss(pt, tt, "spatial_corr").item() == pytest.approx(-spatial, rel=1e-4)
    assert brain_loss(pt, tt, "temporal_corr").item() == pytest.approx(-temporal, rel=1e-4)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        brain_loss(pt, tt, "l1")


@pytest.mark.parametrize("sizes", [(3, 1), (1, 3), (4,)])
def test_validation_metrics_weigh_batches_by_their_rows(sizes):
    # MSE and the spatial correlation are per-row means, so how the rows fall into batches must not matter
    rng = np.random.default_rng(5)
    p, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    cuts = np.cumsum(sizes)[:-1]
    preds = [torch.tensor(b) for b in np.split(p, cuts)]
    targets = [torch.tensor(b) for b in np.split(t, cuts)]
    mse = training.validation_metrics(preds, targets, "mse")
    assert mse["val_loss"] == pytest.approx(((p - t) ** 2).mean(), rel=1e-6)
    assert mse["val_corr"] == pytest.approx(np.mean([np.corrcoef(p[:, v], t[:, v])[0, 1] for v in range(3)]), rel=1e-6)
    spatial = training.validation_metrics(preds, targets, "spatial_corr")["val_loss"]
    assert spatial == pytest.approx(-np.mean([np.corrcoef(p[i], t[i])[0, 1] for i in range(4)]), rel=1e-5)


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_linear_decay(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == 0.0
    f = warmup_linear_decay(17, 0.1)  # 1.7 warm-up steps round to 2
    assert f(0) == pytest.approx(0.5) and f(1) == 1.0 and f(2) == 1.0 and f(16) == pytest.approx(1 / 15)


class _Recorder(torch.nn.Module):
    """A linear model with a DDP-like `no_sync` that records, per forward, whether gradients would sync."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2, bias=False)
        self.synced, self._skip = [], False

    def no_sync(self):
        outer = self

        class _Ctx:
            def __enter__(self):
                outer._skip = True

            def __exit__(self, *exc):
                outer._skip = False
        return _Ctx()

    def forward(self, x):
        self.synced.append(not self._skip)
        return self.lin(x)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}, self.y[i]


def test_accumulation_averages_each_step_over_its_own_micro_batches_and_syncs_the_last():
    # 7 micro-batches of 2, accumulation 3: steps over micro-batches (0,1,2), (3,4,5), (6); by hand with SGD lr 1
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(14, 3, generator=g), torch.randn(14, 2, generator=g)
    model = _Recorder()
    w = model.lin.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loader = torch.utils.data.DataLoader(_Pairs(x, y), batch_size=2, shuffle=False)
    loss, steps = training.train_one_epoch(model, loader, opt, sched, "mse", 3, torch.device("cpu"), "fp32",
                                           disable_progress=True)
    losses = []
    for group in ([0, 1, 2], [3, 4, 5], [6]):
        grads = []
        for b in group:
            xb, yb = x[2 * b:2 * b + 2], y[2 * b:2 * b + 2]
            losses.append(((xb @ w.T - yb) ** 2).mean().item())
            grads.append(2 * (xb @ w.T - yb).T @ xb / yb.numel())  # d/dW of the micro-batch's MSE
        w = w - torch.stack(grads).mean(0)
    assert steps == 3
    torch.testing.assert_close(model.lin.weight.detach(), w, rtol=1e-5, atol=1e-6)
    # under DDP only the last micro-batch of each step syncs gradients: the lone tail one must, too
    assert model.synced == [False, False, True, False, False, True, True]
    assert loss == pytest.approx(np.mean(losses), rel=1e-5)  # the epoch's loss: per sample, before each step


def test_a_non_finite_gradient_stops_the_epoch_before_its_step_is_taken():
    # micro-batch 4 (of step 2, micro-batches 3-5) holds an inf input: step 1 is taken, step 2 is not
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(14, 3, generator=g), torch.randn(14, 2, generator=g)
    x[9, 1] = float("inf")
    model = _Recorder()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loader = torch.utils.data.DataLoader(_Pairs(x, y), batch_size=2, shuffle=False)
    w0 = model.lin.weight.detach().clone()
    with pytest.raises(training.TrainingDiverged, match=r"epoch 7: the gradient of optimizer step 12 is not finite "
                                                        r"\(its micro-batches' losses \d\.\d+, (inf|nan), \d\.\d+\)"):
        training.train_one_epoch(model, loader, opt, sched, "mse", 3, torch.device("cpu"), "fp32", desc="epoch 7",
                                 step_offset=10, disable_progress=True)
    assert torch.isfinite(model.lin.weight).all() and not torch.equal(model.lin.weight, w0)  # step 11 only
    assert len(model.synced) == 6  # it stopped at the end of step 12's micro-batches, before stepping


def test_controls_decouple_targets():
    stories = [_story(n, r, seed=i) for i, (n, r) in enumerate([("a", 20), ("b", 25), ("c", 18)])]
    swapped = apply_target_control(stories, "story-swap", seed=0)
    for s, w in zip(stories, swapped):
        assert w.targets.shape == s.targets.shape and w.wav is s.wav
        others = [o for o in stories if o is not s]
        assert any(np.array_equal(w.targets[:5], o.targets[:5]) for o in others)
    shuffled = apply_target_control(stories, "block-shuffle", seed=0, block_trs=4)
    for s, b in zip(stories, shuffled):
        assert sorted(map(tuple, b.targets)) == sorted(map(tuple, s.targets))  # same rows, new order
        assert not np.array_equal(b.targets[:4], s.targets[:4])
    p = _distant_permutation(10, 2, np.random.default_rng(1))
    assert sorted(p) == list(range(10)) and np.all(np.abs(p - np.arange(10)) >= 2)


def test_ridge_head_weights_match_closed_form_and_pick_the_better_alpha():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (200, 6))
    w_true = rng.normal(0, 1, (6, 3))
    y = x @ w_true + 2.0 + rng.normal(0, 0.1, (200, 3))
    xv = rng.normal(0, 1, (50, 6))
    yv = xv @ w_true + 2.0
    w, b, alphas = training.ridge_head_weights(x, y, xv, yv, alphas=[1e-3])
    xc, yc = x - x.mean(0), y - y.mean(0)
    lam = 1e-3 * np.trace(xc.T @ xc) / 6
    np.testing.assert_allclose(w, np.linalg.solve(xc.T @ xc + lam * np.eye(6), xc.T @ yc), rtol=1e-6)
    np.testing.assert_allclose(b, y.mean(0) - x.mean(0) @ w, rtol=1e-6)
    # low-noise data: the tiny penalty predicts validation better than a huge one
    _, _, chosen = training.ridge_head_weights(x, y, xv, yv, alphas=[1e-3, 1e3])
    assert (chosen == 1e-3).all()
    # on noisy targets far from zero, each target's alpha is the one whose readout, intercept included, has the
    # smallest validation MSE
    grid = np.logspace(-3, 5, 9)
    y, yv = x @ w_true + 50.0 + rng.normal(0, 3, (200, 3)), xv @ w_true + 50.0 + rng.normal(0, 3, (50, 3))
    _, _, chosen = training.ridge_head_weights(x, y, xv, yv, alphas=grid)
    mse = [(((xv @ w_a + b_a) - yv) ** 2).mean(0) for w_a, b_a, _ in
           (training.ridge_head_weights(x, y, xv, yv, alphas=[a]) for a in grid)]
    np.testing.assert_array_equal(chosen, grid[np.argmin(mse, axis=0)])


def test_each_torchrun_process_uses_its_own_gpu_before_nccl_starts(monkeypatch):
    # NCCL runs barrier/broadcast_object_list on the current GPU: without set_device every rank would use GPU 0
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: calls.append(("init", backend)))
    assert training.distributed_setup() == (3, 4, 1)
    assert calls == [("set_device", 1), ("init", "nccl")]
    calls.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training.distributed_setup() == (3, 4, 1)
    assert calls == [("init", "gloo")]  # CPU processes: no GPU to choose


def test_several_subjects_targets_are_each_subjects_responses_side_by_side_and_audio_is_read_once(mini, monkeypatch):
    from data_utils import Ds003020
    data = Ds003020(mini / "ds003020")
    stories = ["souls", "stagefright"]
    v1, v2 = np.array([0, 5, 7]), np.array([3, 4])
    alone = [training.load_story_data(data, [s], stories, [v], quiet=True) for s, v in (("UTS01", v1), ("UTS02", v2))]
    reads = []
    real_audio = Ds003020.audio
    monkeypatch.setattr(Ds003020, "audio", lambda self, story: reads.append(story) or real_audio(self, story))
    both = training.load_story_data(data, ["UTS01", "UTS02"], stories, [v1, v2], quiet=True)
    assert reads == stories  # one read per story, not one per subject
    for story, a1, a2, b in zip(stories, *alone, both):
        assert b.name == story and b.targets.shape == (len(a1.targets), 5)
        np.testing.assert_array_equal(b.targets[:, :3], a1.targets)
        np.testing.assert_array_equal(b.targets[:, 3:], a2.targets)
        np.testing.assert_array_equal(b.wav, a1.wav)
    with pytest.raises(ValueError, match="one voxel selection per subject: 2 subjects, 1 selections"):
        training.load_story_data(data, ["UTS01", "UTS02"], stories, [v1], quiet=True)


def test_stored_pooled_features_are_used_only_when_readable_and_of_these_windows(tmp_path):
    from atomic_io import save_npz_atomic
    path = tmp_path / "pooled.npz"
    train, val = np.ones((5, 3)), np.zeros((2, 3))
    save_npz_atomic(path, train=train, val=val)
    got = training._load_pooled(path, [5, 2])
    np.testing.assert_array_equal(got[0], train)
    np.testing.assert_array_equal(got[1], val)
    assert training._load_pooled(path, [5, 3]) is None  # other windows: computed again
    path.write_bytes(path.read_bytes()[:120])  # damaged: computed again, not a traceback
    assert training._load_pooled(path, [5, 2]) is None
    assert training._load_pooled(tmp_path / "absent.npz", [5, 2]) is None


def test_save_epoch_swaps_in_whole_checkpoints_and_leaves_the_last_best_when_a_save_is_killed(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(10))

    def fake_save_tuned(m, extractor, folder):  # the HF model folder itself is models.save_tuned's (tested there)
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(repr(m.weight.tolist()))
    monkeypatch.setattr(training, "save_tuned", fake_save_tuned)
    row = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.9}
    state = {"epoch": 1, "step": 4, "metrics": [row]}
    training.save_epoch(tmp_path, model, None, optimizer, scheduler, state, {"epoch": 1, "val_loss": 0.9})
    first_best = (tmp_path / "best" / "weights.txt").read_text()
    assert json.loads((tmp_path / "best" / "brain_tuning.json").read_text()) == {"epoch": 1, "val_loss": 0.9}
    assert json.loads((tmp_path / "last" / "state.json").read_text())["epoch"] == 1

    with torch.no_grad():
        model.weight.add_(1.0)
    state = {"epoch": 2, "step": 8, "metrics": [row, {**row, "epoch": 2, "val_loss": 1.1}]}
    training.save_epoch(tmp_path, model, None, optimizer, scheduler, state, None)  # not better: best/ stays
    assert (tmp_path / "best" / "weights.txt").read_text() == first_best
    assert json.loads((tmp_path / "last" / "state.json").read_text())["epoch"] == 2
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3  # header and two epochs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last", "metrics.csv"]  # no *.tmp left

    def killed(m, extractor, folder):
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text("half")
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "save_tuned", killed)
    state = {"epoch": 3, "step": 12, "metrics": state["metrics"] + [{**row, "epoch": 3, "val_loss": 0.8}]}
    with pytest.raises(KeyboardInterrupt):
        training.save_epoch(tmp_path, model, None, optimizer, scheduler, state, {"epoch": 3, "val_loss": 0.8})
    assert (tmp_path / "best" / "weights.txt").read_text() == first_best  # the half-written one is beside it
    assert json.loads((tmp_path / "last" / "state.json").read_text())["epoch"] == 2

    def disk_full(m, extractor, folder):  # safetensors' error on a full disk names no file
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text("half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(training, "save_tuned", disk_full)
    with pytest.raises(WriteError, match=f"^{tmp_path / 'best.tmp'}: could not be written .*os error 28"):
        training.save_epoch(tmp_path, model, None, optimizer, scheduler, state, {"epoch": 3, "val_loss": 0.8})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last", "metrics.csv"]  # the partial one removed
    assert (tmp_path / "best" / "weights.txt").read_text() == first_best
    monkeypatch.setattr(training, "save_tuned", fake_save_tuned)

    def torch_save_on_a_full_disk(obj, path):  # what torch's zip writer raises there, naming no file either
        Path(path).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(training.torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(WriteError, match=f"^{tmp_path / 'last.tmp'}: could not be written \\(RuntimeError"):
        training.save_epoch(tmp_path, model, None, optimizer, scheduler, state, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last", "metrics.csv"]
    assert json.loads((tmp_path / "last" / "state.json").read_text())["epoch"] == 2


def test_epoch_order_depends_on_seed_and_epoch_only():
    windows = list(range(20))

    def order(epoch, seed=0, micro=4):
        batches = training.epoch_loader(windows, epoch, seed, micro, 0, torch.device("cpu"), 0, 1)
        return torch.cat(list(batches)).tolist()
    assert sorted(order(1)) == windows and order(1) == order(1)
    assert order(1) != order(2) and order(1) != order(1, seed=1)
    assert order(3, micro=6) == order(3)  # the micro batch splits the same order
    shares = [torch.cat(list(training.epoch_loader(windows, 1, 0, 4, 0, torch.device("cpu"), r, 2))).tolist()
              for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == windows  # two processes: each its half, together every window
    again = torch.cat(list(training.epoch_loader(windows, 2, 0, 4, 0, torch.device("cpu"), 0, 2))).tolist()
    assert again != shares[0]  # under DDP too, each epoch its own order


def test_story_swap_never_pairs_a_story_with_its_own_responses():
    grid = simulated_tr_grid(40)
    stories = [StoryData(f"s{k}", np.zeros(16000, np.float32), grid, np.full((20, 2), k, np.float32)) for k in range(4)]
    shifts = set()
    for seed in range(20):
        swapped = apply_target_control(stories, "story-swap", seed)
        sources = [int(s.targets[0, 0]) for s in swapped]
        assert sorted(sources) == [0, 1, 2, 3] and all(src != k for k, src in enumerate(sources))
        shifts.add((sources[0] - 0) % 4)
    assert shifts == {1, 2, 3}  # the seed draws which story's responses each one takes


def test_distant_permutation_falls_back_to_a_half_rotation_when_none_is_far_enough():
    rng = np.random.default_rng(0)
    assert _distant_permutation(2, 2, rng).tolist() == [1, 0]  # no permutation of 2 moves a block 2 places
    assert _distant_permutation(5, 5, rng).tolist() == [3, 4, 0, 1, 2]
    # a move of exactly min_distance is far enough: 5 blocks 2 apart have several such permutations
    drawn = {tuple(_distant_permutation(5, 2, np.random.default_rng(seed))) for seed in range(10)}
    assert len(drawn) > 1 and all(np.abs(np.array(p) - np.arange(5)).min() >= 2 for p in drawn)


def test_targets_from_a_file_must_be_finite_and_equally_wide(mini_root):
    import data_utils as du
    data = du.Ds003020(mini_root)
    stories = ["souls", "avatar"]
    rows = {s: data.n_response_rows("UTS01", s) for s in stories}
    good = {s: np.ones((rows[s], 3), np.float32) for s in stories}
    loaded = training.load_story_data(data, ["UTS01"], stories, None, targets_from=good, quiet=True)
    assert [d.targets.shape for d in loaded] == [(rows[s], 3) for s in stories]
    wide = {**good, "avatar": np.ones((rows["avatar"], 4), np.float32)}
    with pytest.raises(du.DataError, match=r"t.npz: every story needs the same number of target columns; most have "
                                           r"\d, but \{'\w+': \d\}"):
        training.load_story_data(data, ["UTS01"], stories, None, targets_from=wide, quiet=True, targets_source="t.npz")
    bad = {**good, "avatar": good["avatar"].copy()}
    bad["avatar"][[2, 5], 1] = [np.nan, np.inf]
    with pytest.raises(du.DataError, match=r"t.npz: 'avatar' holds 2 NaN or inf values \(rows \[2, 5\]...\)"):
        training.load_story_data(data, ["UTS01"], stories, None, targets_from=bad, quiet=True, targets_source="t.npz")


def test_a_checkpoint_of_a_model_with_tied_weights_saves_and_loads(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    model[1].weight = model[0].weight  # tied: safetensors refuses tensors sharing memory
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    training.save_training_state(tmp_path / "ckpt", model, optimizer, scheduler, {"epoch": 3})
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    fresh[1].weight = fresh[0].weight  # the resumed run builds the same (tied) model
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1)
    state = training.load_training_state(tmp_path / "ckpt", fresh, fresh_optimizer,
                                         torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1.0))
    assert state == {"epoch": 3}
    assert torch.equal(fresh[0].weight, model[0].weight) and torch.equal(fresh[1].weight, model[0].weight)
