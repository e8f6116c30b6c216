"""Speech encoders with a voxel head: loading, freezing, pooling, LoRA, saving.

Any HuggingFace audio encoder loads through the Auto classes (wav2vec2, HuBERT, WavLM, data2vec-audio and
the Whisper encoder, decoder unused). `SpeechEncoder` turns 16 kHz waveforms into hidden states with the
same conventions for every family: `hidden_states[0]` is the transformer input, `hidden_states[i]` the output
of layer i, and a boolean mask of the frames that cover real audio.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

WAV2VEC_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
SUPPORTED_TYPES = WAV2VEC_FAMILY + ("whisper",)
WHISPER_MODES = ("pad30", "truncate")
# LoRA targets per family. WavLM's attention calls F.multi_head_attention_forward with the raw projection
# weights, so LoRA on q/k/v/out would silently never run: adapt its feed-forward layers instead.
DEFAULT_LORA_TARGETS = {
    "wav2vec2": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "hubert": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "data2vec-audio": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "wavlm": ["intermediate_dense", "output_dense"],
    "whisper": ["q_proj", "k_proj", "v_proj", "out_proj"],
}
WAVLM_BYPASSED = {"q_proj", "k_proj", "v_proj", "out_proj"}
HEAD_FILE, HEAD_CONFIG = "voxel_head.safetensors", "voxel_head.json"


class ModelError(ValueError):
    """A model that the toolkit cannot use as asked."""


@contextlib.contextmanager
def _without_transformers_bars():
    """transformers' own weight loading/saving bars: a line per checkpoint in batch logs, seconds of work."""
    from transformers.utils import logging as hf_logging
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_backbone(name_or_path: str, dtype: torch.dtype = torch.float32, revision: str = "main"):
    """Load a pretrained speech model and its feature extractor from a hub id or a local directory.

    `revision`: the hub branch, tag or full commit hash to load (a local directory has one version and ignores it).
    Returns (model, feature_extractor, model_type). Whisper returns the full WhisperModel (the encoder is
    used, the decoder is kept only so that a saved tuned model stays a standard checkpoint).
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    if Path(name_or_path).expanduser().exists() and (hint := model_path_hint(name_or_path, revision)):
        # before transformers: 4.x guesses a model type from the folder's name ("empty" -> mpt) without config.json,
        # and reads a config.json given as a file, then fails on the weights with a message about repo ids
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {hint}")
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a model config from {name_or_path!r}{at_revision(revision)}: "
                         f"{model_path_hint(name_or_path, revision) or err}") from err
    model_type = config.model_type
    if model_type not in SUPPORTED_TYPES:
        raise ModelError(f"{name_or_path}: model type {model_type!r} is not a supported speech encoder "
                         f"(expected one of {', '.join(SUPPORTED_TYPES)})")
    from safetensors import SafetensorError
    try:
        with _without_transformers_bars():
            model, loading = AutoModel.from_pretrained(name_or_path, dtype=dtype, output_loading_info=True,
                                                       revision=revision)
        extractor = AutoFeatureExtractor.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError, SafetensorError) as err:  # weights or preprocessor config missing or unreadable
        raise ModelError(f"cannot load the {model_type} model in {name_or_path!r}: {type(err).__name__}: {err}") from err
    except RuntimeError as err:  # transformers raises it, after logging the shapes, when the weights misfit the config
        raise ModelError(f"cannot load the {model_type} model in {name_or_path!r}: its weights do not fit its "
                         f"config.json (tensor shapes differ; transformers' report above lists them)") from err
    from file_readers import SAMPLE_RATE
    rate = getattr(extractor, "sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:  # every script feeds 16 kHz audio: another rate would be read as the wrong speed
        raise ModelError(f"{name_or_path}: its feature extractor expects {rate} Hz audio (preprocessor_config.json "
                         f"'sampling_rate'); the toolkit gives every model {SAMPLE_RATE} Hz audio")
    check_loaded_weights(model, model_type, loading["missing_keys"], loading["unexpected_keys"], name_or_path)
    if note := task_checkpoint_note(name_or_path, config.architectures, model_type):
        print(note, file=sys.stderr)
    return model, extractor, model_type


WINDOW_WHISPER_MODE_HELP = "pad30 = pad each window to 30 s (paper); truncate = positions cut to the window (faster)"


def task_checkpoint_note(name: str, architectures: list[str] | None, model_type: str) -> str | None:
    """A line for the log when `name` holds an encoder fine-tuned for a task (config.json `architectures`, e.g.
    Wav2Vec2ForCTC: facebook/wav2vec2-base-960h), whose encoder is read without its task head; None for a
    self-supervised checkpoint (…Model, …ForPreTraining) and for Whisper, whose checkpoints all carry the decoder."""
    tasks = [a for a in architectures or () if "For" in a and not a.endswith("ForPreTraining")]
    if model_type == "whisper" or not tasks:
        return None
    return (f"note: {name} is a {tasks[0]} checkpoint, fine-tuned for a task: its encoder is used with the "
            f"fine-tuned weights and its task head is left out; the paper brain-tunes and compares self-supervised "
            f"checkpoints (facebook/wav2vec2-base, not wav2vec2-base-960h)")


def check_loaded_weights(model: nn.Module, model_type: str, missing, unexpected, where: str) -> None:
    """Raise ModelError when the checkpoint lacks most of the weights the toolkit uses (the encoder's; all of
    Whisper's encoder, none of its decoder), and warn on stderr when it lacks some: transformers initialises them at
    random and goes on, so weights saved under another prefix would be evaluated as a random model.

    `missing`, `unexpected`: parameter names from `from_pretrained(..., output_loading_info=True)`.
    """
    used = {k for k in model.state_dict() if model_type != "whisper" or k.startswith("encoder.")}
    absent = sorted(set(missing) & used)
    if not absent:
        return
    listed = ", ".join(absent[:3]) + (" ..." if len(absent) > 3 else "")
    if 2 * len(absent) >= len(used):
        extra = sorted(unexpected)
        raise ModelError(f"{where}: the checkpoint lacks {len(absent)} of the {len(used)} {model_type} encoder weights "
                         f"({listed}){f' and holds {len(extra)} others ({extra[0]} ...)' if extra else ''}: saved "
                         f"under another prefix or for another model, it would run as a randomly initialised model")
    print(f"warning: {where}: {len(absent)} of the {len(used)} {model_type} encoder weights are missing from the "
          f"checkpoint and were initialised at random ({listed})", file=sys.stderr)


def at_revision(revision: str) -> str:
    """The words `at revision 'v1'` (with a leading space) for a message naming a hub id; "" for main, what a hub id
    without a revision loads."""
    return "" if revision == "main" else f" at revision {revision!r}"


def hub_revision(name_or_path: str, revision: str = "main") -> str | None:
    """The commit of the hub snapshot that `from_pretrained(name_or_path, revision=revision)` reads offline: the one
    the local hub cache's ref `revision` names (for `main`, the last one fetched), or `revision` itself if it is a
    cached commit. None for a local folder, or a hub id with no cached config at that revision.

    A hub id names a repository whose `main` moves; its commit names the exact weights (snapshot files never
    change), so it is what a run records and what a feature cache is keyed on.
    """
    if Path(name_or_path).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache
    try:
        found = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    except ValueError:  # not a valid repository id (HFValidationError): nothing on the hub to name
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def tuned_whisper_mode(name_or_path: str) -> str | None:
    """The --whisper-mode a brain-tuned Whisper was tuned with (its brain_tuning.json, since 2026-12-07), else None
    (any other model, or a record that does not read: the evaluation names that one)."""
    try:
        record = json.loads((Path(name_or_path).expanduser() / "brain_tuning.json").read_text())
    except (OSError, ValueError):
        return None
    mode = record.get("whisper_mode") if isinstance(record, dict) else None
    return mode if mode in WHISPER_MODES else None


def whisper_mode_note(name: str, tuned_mode: str | None, model_type: str, whisper_mode: str) -> str | None:
    """A line for the log where a Whisper model tuned in one --whisper-mode is read in the other (the positions
    and the padding it attends to differ from those it was tuned with), or where a mode other than the default is
    given for a model that is not a Whisper (it reads it the same either way), else None."""
    if model_type != "whisper":
        return (None if whisper_mode == WHISPER_MODES[0] else
                f"note: --whisper-mode {whisper_mode} applies to Whisper models; {name} ({model_type}) is read the "
                f"same in either mode")
    if tuned_mode is None or tuned_mode == whisper_mode:
        return None
    return (f"note: {name} was brain-tuned with --whisper-mode {tuned_mode} and is read here with --whisper-mode "
            f"{whisper_mode}; pass --whisper-mode {tuned_mode} to read it as it was tuned (and the same for every "
            f"model compared with it)")


def model_path_hint(name_or_path: str, revision: str = "main") -> str | None:
    """What to pass instead, where `name_or_path` is clearly not a model: a trainer's run folder, a local path that
    does not exist, or a hub id while hub downloads are off. None when there is nothing more to say."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "best").is_dir() and not (path / "model.safetensors").is_file():
            return (f"a brain-tuning run folder, not a model; pass its model, {path / 'best'} (the best epoch's; "
                    f"{path / 'last'} holds the training state)")
        if (path / "state.json").is_file() and (path / "optim.pt").is_file() and not (path / "config.json").is_file():
            return (f"a brain-tuning run's training state (last/, for --resume: weights without their config), not a "
                    f"model; pass the run's model, {path.parent / 'best'}")
        if not (path / "config.json").is_file():  # else transformers asks for a `model_type` key in a file that is absent
            names = sorted(p.name for p in path.iterdir())
            found = (f"it holds {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}" if names else "it is empty")
            return f"a folder without config.json ({found}); a local model folder holds config.json and the weights"
        return None
    if path.is_file():  # a file of the model (config.json, model.safetensors) rather than its folder
        folder = path.parent
        return ("a file, not a model folder; a local model is the folder holding config.json and the weights"
                + (f": pass {folder}" if (folder / "config.json").is_file() else ""))
    if path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        return f"no such folder {path} (a local model folder holds config.json and the weights)"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return (f"not a local folder, and hub downloads are off (HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']}) with "
                f"no cached copy of {name_or_path}{at_revision(revision)}: pass a local model folder, or fetch it where "
                f"the hub is reachable")
    return None


def _install_output_hooks(model: nn.Module) -> None:
    """Install transformers' hidden-state recording hooks on `model` itself (transformers >= 5; older: nothing).

    They are installed lazily, once per model object, and marked by an attribute: a shallow copy would install
    them again on the submodules it shares with `model` at every call, and record each layer once more each time.
    """
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # transformers 4: hidden states are returned without hooks
        return
    maybe_install_capturing_hooks(model)


class _Precomputed(nn.Module):
    """Stands in for a feature extractor whose output is already known (`SpeechEncoder.forward(front=...)`)."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, _input_values):
        return self.output


class SpeechEncoder(nn.Module):
    """Waveforms (B, n_samples) at 16 kHz -> per-layer hidden states and a valid-frame mask.

    Parameters
    ----------
    model : a loaded HF model (see `load_backbone`).
    feature_extractor : its feature extractor (normalisation flag, Whisper mel filters).
    model_type : one of SUPPORTED_TYPES.
    whisper_mode : "pad30" (the paper: pad the log-mel to 30 s, all 1500 positions, pool valid frames) or
        "truncate" (positions cut to the window length: faster, outputs differ slightly).
    """

    def __init__(self, model: nn.Module, feature_extractor, model_type: str, whisper_mode: str = "pad30"):
        super().__init__()
        if whisper_mode not in WHISPER_MODES:
            raise ModelError(f"whisper_mode must be one of {WHISPER_MODES}, found {whisper_mode!r}")
        self.model = model
        self.model_type = model_type
        self.whisper_mode = whisper_mode
        self.do_normalize = bool(getattr(feature_extractor, "do_normalize", False))
        if model_type == "whisper":
            self.register_buffer("mel_filters", torch.as_tensor(feature_extractor.mel_filters, dtype=torch.float32),
                                 persistent=False)
            self.n_fft, self.hop = feature_extractor.n_fft, feature_extractor.hop_length
            self.n_mel_frames = feature_extractor.nb_max_frames  # 3000 for 30 s
        # transformer blocks included in a precomputed front end passed to forward(front=...)
        self.front_blocks = 0

    @property
    def encoder(self) -> nn.Module:
        return self.model.get_encoder() if self.model_type == "whisper" else self.model

    @property
    def num_layers(self) -> int:
        cfg = self.model.config
        return cfg.encoder_layers if self.model_type == "whisper" else cfg.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        return cfg.d_model if self.model_type == "whisper" else cfg.hidden_size

    @property
    def layerdrop(self) -> float:
        """Probability that a training forward skips a transformer block (HF LayerDrop; our Whisper loop has none)."""
        return 0.0 if self.model_type == "whisper" else float(getattr(self.model.config, "layerdrop", 0.0) or 0.0)

    def freeze_feature_encoder(self) -> None:
        """Freeze the convolutional front end (Whisper: conv1, conv2 and positional embeddings)."""
        if self.model_type == "whisper":
            enc = self.encoder
            for module in (enc.conv1, enc.conv2, enc.embed_positions):
                module.requires_grad_(False)
            self.model.get_decoder().requires_grad_(False)  # unused: never trained
        else:
            self.model.feature_extractor._freeze_parameters()

    def transformer_layers(self) -> nn.ModuleList:
        """The encoder's transformer blocks, bottom first."""
        return self.encoder.layers if self.model_type == "whisper" else self.model.encoder.layers

    def freeze_bottom_layers(self, n_layers: int) -> int:
        """Freeze everything below transformer block `n_layers` (front end, embeddings, blocks 0..n-1).

        Parameters of the blocks above (and of the final layer norm) keep their trainable flag, so this composes
        with LoRA (`apply_lora(skip_blocks=n_layers)` puts adapters on the upper blocks only). Returns the number
        of frozen params.
        """
        blocks = self.transformer_layers()
        if not 0 <= n_layers <= len(blocks):
            raise ModelError(f"--freeze-layers {n_layers}: this model has {len(blocks)} transformer layers")
        if n_layers == 0:
            return 0
        keep = {id(p) for block in blocks[n_layers:] for p in block.parameters()}
        final_norm = self.encoder.layer_norm if self.model_type == "whisper" else (
            self.model.encoder.layer_norm if getattr(self.model.config, "do_stable_layer_norm", False) else None)
        if final_norm is not None:  # applied after the last block: belongs to the top
            keep |= {id(p) for p in final_norm.parameters()}
        frozen = 0
        for p in self.model.parameters():
            if id(p) not in keep and p.requires_grad:
                p.requires_grad_(False)
                frozen += p.numel()
        return frozen

    def front_end_modules(self, n_blocks: int = 0) -> list[nn.Module]:
        """The modules of the front end: conv feature encoder (Whisper: conv1, conv2, positions) + n_blocks."""
        if self.model_type == "whisper":
            enc = self.encoder
            return [enc.conv1, enc.conv2, enc.embed_positions, *enc.layers[:n_blocks]]
        if n_blocks:
            raise ModelError(f"{self.model_type}: only the convolutional feature encoder can be precomputed")
        return [self.model.feature_extractor]

    def cacheable_blocks(self) -> int:
        """How many bottom transformer blocks a precomputed front end may include.

        Whisper: the leading blocks whose parameters are all frozen and that hold no dropout (config dropouts 0,
        no Dropout module with p > 0 such as LoRA's: a block with dropout is not a fixed function in training),
        at most num_layers − 1. wav2vec2 family: 0 (its
        feature projection, positional convolution and SpecAugment run after the conv encoder and stay live).
        """
        if self.model_type != "whisper":
            return 0
        cfg = self.model.config
        if any(getattr(cfg, k, 0) for k in ("dropout", "attention_dropout", "activation_dropout")):
            return 0
        n = 0
        for block in self.transformer_layers()[:self.num_layers - 1]:
            if any(p.requires_grad for p in block.parameters()) or any(
                    isinstance(m, nn.Dropout) and m.p > 0 for m in block.modules()):  # e.g. LoRA dropout
                break
            n += 1
        return n

    @torch.no_grad()
    def front_end(self, wav: torch.Tensor, n_blocks: int = 0) -> torch.Tensor:
        """Output of the frozen front end, the input of `forward(front=...)` with `front_blocks = n_blocks`.

        Parameters
        ----------
        wav : (B, n_samples) float 16 kHz waveforms of equal length.
        n_blocks : bottom transformer blocks to include (Whisper only, at most `cacheable_blocks()`).

        Returns
        -------
        wav2vec2 family: conv feature encoder output (B, conv_channels, frames), after the waveform
        normalisation. Whisper: conv front end + positional embeddings, before dropout, then n_blocks blocks
        (B, frames, d_model).
        """
        trainable = [n for m in self.front_end_modules(n_blocks) for n, p in m.named_parameters() if p.requires_grad]
        if trainable:
            raise ModelError(f"the front end to precompute has trainable parameters ({trainable[:3]}...): "
                             f"freeze the feature encoder (and --freeze-layers >= {n_blocks})")
        if n_blocks > self.cacheable_blocks():
            raise ModelError(f"cannot precompute {n_blocks} blocks: at most {self.cacheable_blocks()} are frozen and "
                             f"dropout-free in this model")
        if self.model_type == "whisper":
            x = self._whisper_front(wav)
            for layer in self.encoder.layers[:n_blocks]:
                x = _whisper_block(layer, x)
            return x
        return self.model.feature_extractor(self._normalise(wav))

    def _normalise(self, wav: torch.Tensor) -> torch.Tensor:
        if not self.do_normalize:
            return wav
        # the feature extractor's zero-mean unit-variance normalisation, per waveform
        return (wav - wav.mean(dim=1, keepdim=True)) / torch.sqrt(wav.var(dim=1, keepdim=True, unbiased=False) + 1e-7)

    @property
    def pads_to_fixed_length(self) -> bool:
        """Whether every input is zero-padded to one length before the model sees it (Whisper pad30: 30 s), so that
        waveforms of any lengths, zero-padded to a common one, give the same hidden states as each alone."""
        return self.model_type == "whisper" and self.whisper_mode == "pad30"

    @property
    def max_input_samples(self) -> int | None:
        """The longest waveform the encoder takes, in 16 kHz samples: Whisper's 30 s (1500 positions), else None."""
        return self.n_mel_frames * self.hop if self.model_type == "whisper" else None

    def frame_rate(self) -> float:
        """Encoder frames per second of audio (about 50 for wav2vec2-style and Whisper encoders), over 10 s."""
        return self.frame_count(16000 * 10) / 10.0

    def frame_count(self, n_samples: int) -> int:
        """Number of encoder frames covering `n_samples` of real audio."""
        if self.model_type == "whisper":
            return min(int(math.ceil(n_samples / self.hop / 2)), self.n_mel_frames // 2)
        n = n_samples
        for k, s in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            n = (n - k) // s + 1
        return int(n)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Whisper log-mel (B, n_mels, frames), as WhisperFeatureExtractor computes it, on wav's device."""
        window = torch.hann_window(self.n_fft, device=wav.device)
        stft = torch.stft(wav.float(), self.n_fft, self.hop, window=window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self.mel_filters.T @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0

    def forward(self, wav: torch.Tensor | None = None, layers: list[int] | None = None,
                front: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                front_blocks: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states of the requested layers (default all) and the valid-frame mask.

        Parameters
        ----------
        wav : (B, n_samples) float 16 kHz waveforms of equal length.
        layers : hidden-state indices to return (0 = transformer input, num_layers = last).
        front, valid : instead of `wav`, a precomputed `front_end(wav, self.front_blocks)` and its
            (B, frames) valid-frame mask (the front-end cache); layers below `front_blocks` are then unavailable.
        front_blocks : the blocks included in `front` for this call (default `self.front_blocks`); an argument,
            not the attribute, where several threads share the model.

        Returns
        -------
        states : list of (B, frames, hidden) tensors, one per requested layer.
        valid : (B, frames) bool, frames covering real audio (all True except Whisper pad30 padding).
        """
        if layers is None:
            layers = list(range(self.num_layers + 1))
        bad = [i for i in layers if not 0 <= i <= self.num_layers]
        if bad:
            raise ModelError(f"layer(s) {bad} out of range: this model has hidden states 0..{self.num_layers}")
        if (wav is None) == (front is None):
            raise ValueError("pass exactly one of wav or front")
        front_blocks = self.front_blocks if front_blocks is None else front_blocks
        if front is not None and (valid is None or min(layers) < front_blocks):
            raise ValueError(f"forward(front=...) needs the valid mask and layers >= front_blocks "
                             f"({front_blocks}); asked for {layers}")
        if self.model_type == "whisper":
            states = self._whisper_hidden_states(wav, max(layers), front, front_blocks)
        else:
            states = self._wav2vec_hidden_states(wav, layers, front)
        if valid is None:
            valid = self.valid_frames(wav.shape[1], states[layers[0]].shape[:2], wav.device)
        return [states[i] for i in layers], valid

    def valid_frames(self, n_samples, shape: tuple[int, int], device=None) -> torch.Tensor:
        """(B, frames) bool mask of the frames covering `n_samples` of real audio (the rest: Whisper padding).

        n_samples : one count for every row, or one per row (a batch of waveforms zero-padded to one length).
        """
        valid = torch.zeros(shape, dtype=torch.bool, device=device)
        counts = [n_samples] * shape[0] if isinstance(n_samples, int) else list(n_samples)
        for row, n in enumerate(counts):
            valid[row, :min(self.frame_count(n), shape[1])] = True
        return valid

    def _wav2vec_hidden_states(self, wav, layers, front) -> list[torch.Tensor]:
        if front is not None:
            # HF's forward on a shallow view of the model whose feature extractor returns `front`: the same
            # weights, and nothing shared is changed (inference threads may be running the model meanwhile)
            _install_output_hooks(self.model)
            model = copy.copy(self.model)
            model._modules = {**self.model._modules, "feature_extractor": _Precomputed(front)}
            states = self._wav2vec_forward(model, front, layers)
        else:
            states = self._wav2vec_forward(self.model, self._normalise(wav), layers)
        if len(states) != self.num_layers + 1:
            raise ModelError(f"expected {self.num_layers + 1} hidden states, got {len(states)} "
                             f"(LayerDrop active in training mode?)")
        return states

    def _wav2vec_forward(self, model, wav, layers) -> list[torch.Tensor]:
        if layers == [self.num_layers]:
            # only the last layer: no per-layer recording (LayerDrop in training skips recorded layers)
            return [None] * self.num_layers + [model(wav).last_hidden_state]
        return list(model(wav, output_hidden_states=True).hidden_states)

    def _whisper_front(self, wav: torch.Tensor) -> torch.Tensor:
        # Our own front end: HF's forward insists on 3000 mel frames, which the truncated-positions mode must
        # avoid; pad30 reproduces HF's forward exactly.
        enc = self.encoder
        if wav.shape[1] > self.max_input_samples:  # either mode: 1500 positions
            raise ModelError(f"Whisper takes at most 30 s of audio; found {wav.shape[1] / 16000:.1f} s")
        if self.whisper_mode == "pad30":
            n_pad = self.n_mel_frames * self.hop
            # pad the waveform (as WhisperFeatureExtractor does): attention sees the padding frames
            wav = nn.functional.pad(wav, (0, n_pad - wav.shape[1]))
        mel = self.log_mel(wav).to(enc.conv1.weight.dtype)
        x = nn.functional.gelu(enc.conv1(mel))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        return x + enc.embed_positions.weight[:x.shape[1]]

    def _whisper_hidden_states(self, wav, up_to: int, front=None, front_blocks: int = 0) -> list[torch.Tensor]:
        enc = self.encoder
        start = front_blocks if front is not None else 0
        x = self._whisper_front(wav) if front is None else front
        if start == 0:
            x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        states = [None] * start + [x]
        for i in range(start, up_to):
            x = _whisper_block(enc.layers[i], x)
            states.append(enc.layer_norm(x) if i == len(enc.layers) - 1 else x)
        return states


def _whisper_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One Whisper encoder block on hidden states `x` (B, frames, d_model), no attention mask (every frame is seen,
    as in HF's encoder)."""
    out = block(x, None, **_whisper_block_extras(type(block)))
    return out[0] if isinstance(out, tuple) else out


@functools.cache
def _whisper_block_extras(block_type: type) -> dict:
    # transformers 4.x's Whisper encoder block also takes a (required) head mask; 5.x dropped it
    takes_head_mask = "layer_head_mask" in inspect.signature(block_type.forward).parameters
    return {"layer_head_mask": None} if takes_head_mask else {}


# config entries that name or describe a checkpoint without changing what its encoder computes
_CONFIG_BOOKKEEPING = {"_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"}


def _same_state(modules_a: list[nn.Module], modules_b: list[nn.Module]) -> bool:
    for a, b in zip(modules_a, modules_b, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        if sa.keys() != sb.keys() or not all(
                sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


def shared_bottom(reference: SpeechEncoder, other: SpeechEncoder) -> int | None:
    """How much of `other` computes exactly what `reference` computes, from the waveform up.

    None when even the front end differs (architecture, config, preprocessing or any front-end weight); else
    the number of bottom transformer blocks whose weights are also equal (Whisper, at most num_layers − 1, the
    last block being followed by the final layer norm; wav2vec2 family: 0, its feature projection and
    positional convolution run after the conv encoder and are not compared). A model brain-tuned with
    `--freeze-layers k` shares k blocks with its pretrained start: evaluating both together computes them once.
    """
    def config(enc):
        return {k: v for k, v in enc.model.config.to_dict().items() if k not in _CONFIG_BOOKKEEPING}

    if (type(reference.model) is not type(other.model) or reference.model_type != other.model_type
            or config(reference) != config(other) or reference.do_normalize != other.do_normalize):
        return None
    if reference.model_type == "whisper":
        if (reference.whisper_mode, reference.n_fft, reference.hop, reference.n_mel_frames) != (
                other.whisper_mode, other.n_fft, other.hop, other.n_mel_frames) or not torch.equal(
                reference.mel_filters, other.mel_filters):
            return None
    if not _same_state(reference.front_end_modules(0), other.front_end_modules(0)):
        return None
    if reference.model_type != "whisper":
        return 0
    n = 0
    for a, b in zip(reference.transformer_layers()[:reference.num_layers - 1], other.transformer_layers()):
        if not _same_state([a], [b]):
            break
        n += 1
    return n


def masked_mean(states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: (B, frames, H), (B, frames) bool -> (B, H)."""
    w = valid.to(states.dtype).unsqueeze(-1)
    return (states * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


class VoxelHead(nn.Module):
    """Linear readout from a pooled representation to voxels, full rank or through a rank-r bottleneck."""

    def __init__(self, hidden_size: int, n_targets: int, rank: int | None = None):
        super().__init__()
        self.hidden_size, self.n_targets, self.rank = hidden_size, n_targets, rank
        if rank:
            self.net = nn.Sequential(nn.Linear(hidden_size, rank, bias=False), nn.Linear(rank, n_targets))
        else:
            self.net = nn.Linear(hidden_size, n_targets)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "n_targets": self.n_targets, "rank": self.rank}


class BrainTuningModel(nn.Module):
    """SpeechEncoder + mean pooling of the last hidden state over real-audio frames + VoxelHead."""

    def __init__(self, encoder: SpeechEncoder, head: VoxelHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def pool(self, wav: torch.Tensor | None = None, front: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_samples) waveforms, or a precomputed front end + valid mask -> (B, hidden).

        The last hidden state averaged over real-audio frames.
        """
        (last,), valid = self.encoder(wav, layers=[self.encoder.num_layers], front=front, valid=valid)
        return masked_mean(last, valid)

    def forward(self, wav: torch.Tensor | None = None, front: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pool(wav, front, valid))


# ----------------------------------------------------------------------------------------------- LoRA
def apply_lora(encoder: SpeechEncoder, rank: int, alpha: float, dropout: float, targets: list[str] | None = None,
               skip_blocks: int = 0):
    """Wrap the transformer of `encoder` with peft LoRA adapters; only the adapters stay trainable.

    skip_blocks : the bottom blocks get no adapter (those `--freeze-layers` freezes: an adapter there would stay
        at zero, cost compute, and its dropout would keep a frozen Whisper block out of the front-end cache).

    Returns the list of target module names used.
    """
    from peft import LoraConfig, inject_adapter_in_model
    targets = list(targets or DEFAULT_LORA_TARGETS[encoder.model_type])
    if encoder.model_type == "wavlm" and WAVLM_BYPASSED & set(targets):
        raise ModelError(f"LoRA on WavLM attention projections {sorted(WAVLM_BYPASSED & set(targets))} would never "
                         f"run (its attention uses the raw weights); use e.g. {DEFAULT_LORA_TARGETS['wavlm']}")
    if skip_blocks >= len(encoder.transformer_layers()):
        raise ModelError(f"no transformer block is left for LoRA adapters above the {skip_blocks} frozen ones "
                         f"(this model has {len(encoder.transformer_layers())})")
    # peft matches a target by name or dotted suffix; one that matches nothing would be dropped without a word
    names = _adaptable_linear_names(encoder, skip_blocks)
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ModelError(f"LoRA targets {unmatched} match no linear layer of the {encoder.model_type} model's "
                         f"transformer blocks{' above the frozen ones' if skip_blocks else ''}; expected names among "
                         f"{sorted({n.rsplit('.', 1)[-1] for n in names})}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    encoder.requires_grad_(False)
    if encoder.model_type != "whisper":  # Whisper's encoder holds no front-end linear layer to exclude
        config.exclude_modules = ["feature_extractor", "feature_projection"]
    inject_adapter_in_model(config, encoder.encoder)
    for block in encoder.transformer_layers()[:skip_blocks]:
        merge_lora(block)  # lora_B starts at zero: the block's weights stay exactly the pretrained ones
    return targets


def _adaptable_linear_names(encoder: SpeechEncoder, skip_blocks: int) -> list[str]:
    """Full module names (as peft sees them) of the nn.Linear layers in the transformer blocks above `skip_blocks`."""
    linear = {id(m) for block in encoder.transformer_layers()[skip_blocks:] for m in block.modules()
              if isinstance(m, nn.Linear)}
    return [name for name, m in encoder.encoder.named_modules() if id(m) in linear]


def merge_lora(module: nn.Module) -> None:
    """Fold every LoRA adapter into its base weights and restore plain nn.Linear modules, in place."""
    from peft.tuners.lora import LoraLayer
    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            setattr(parent, name.rsplit(".", 1)[-1], child.get_base_layer())


# ----------------------------------------------------------------------------------------------- saving
def save_tuned(model: BrainTuningModel, feature_extractor, out_dir: str | os.PathLike) -> None:
    """Save a standard HF model directory (LoRA merged) + feature extractor + the voxel head."""

    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = model.encoder.model
    if any("lora_" in n for n, _ in backbone.named_parameters()):
        backbone = copy.deepcopy(backbone)
        merge_lora(backbone)
    with _without_transformers_bars():
        backbone.save_pretrained(out_dir, safe_serialization=True)
    feature_extractor.save_pretrained(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(state, str(out_dir / HEAD_FILE))
    (out_dir / HEAD_CONFIG).write_text(json.dumps(model.head.config()))


def load_head(model_dir: str | os.PathLike) -> VoxelHead:
    """The voxel head saved beside a tuned model; raises ModelError naming the folder when it is missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    model_dir = Path(model_dir)
    try:
        cfg = json.loads((model_dir / HEAD_CONFIG).read_text())
        head = VoxelHead(cfg["hidden_size"], cfg["n_targets"], cfg["rank"])
        head.load_state_dict(load_file(str(model_dir / HEAD_FILE)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise ModelError(f"{model_dir}: no usable voxel head ({HEAD_CONFIG} + {HEAD_FILE}; "
                         f"{type(err).__name__}: {err})") from err
    return head
