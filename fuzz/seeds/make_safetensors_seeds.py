#!/usr/bin/python3
"""Seed files for fuzz/fuzz_safetensors.cpp, written by hand (8-byte header length,
JSON header, data), so no torch or safetensors package is needed:

    /usr/bin/python3 fuzz/seeds/make_safetensors_seeds.py   # from the repository root

  safetensors/every_dtype.safetensors        one tensor per dtype we read, a 0-element one, free metadata
  safetensors/model_f32.safetensors          a whole model file (mm-convert's metadata) of a tiny config
  safetensors/model_int8_bf16.safetensors    the same, int8 weights with per-channel scales, bf16 storage,
                                             static activation scales in the quantization metadata
  safetensors/prefixed_no_metadata.safetensors  the tiny model's weights under "model." in F16 and no
                                             metadata: the converter infers the architecture

The tiny config (2 stages of 1 block, dims 2 and 4, d_state 1, 3 classes, 1 input
channel, 8 x 8 images) keeps each file near 10 KB. Its keys and shapes are
ParamTable::for_config's (lib/model/params.cpp). Needs numpy.
"""
import json
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetensors")
CONFIG = {"depths": [1, 1], "dims": [2, 4], "d_state": 1, "num_classes": 3, "in_chans": 1, "image_size": 8,
          "drop_path_rate": 0.1}
INT8_TAILS = (".self_attention.in_proj.weight", ".self_attention.x_proj_weight", ".self_attention.out_proj.weight",
              ".conv33conv33conv11.7.weight", ".downsample.reduction.weight", ".conv33conv33conv11.1.weight",
              ".conv33conv33conv11.4.weight", ".self_attention.dt_projs_weight")  # model/quantization.cpp
rng = np.random.default_rng(11)


def model_shapes(cfg):
    """The state dict's keys and shapes in module order (num_batches_tracked: shape [])."""
    shapes, N, d0 = {}, cfg["d_state"], cfg["dims"][0]
    shapes.update({"patch_embed.proj.weight": [d0, cfg["in_chans"], 4, 4], "patch_embed.proj.bias": [d0],
                   "patch_embed.norm.weight": [d0], "patch_embed.norm.bias": [d0]})
    for i, (depth, C) in enumerate(zip(cfg["depths"], cfg["dims"])):
        c, R = C // 2, (C // 2 + 15) // 16
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            sa, cb = b + "self_attention.", b + "conv33conv33conv11."
            shapes.update({b + "ln_1.weight": [c], b + "ln_1.bias": [c], sa + "x_proj_weight": [4, R + 2 * N, C],
                           sa + "dt_projs_weight": [4, C, R], sa + "dt_projs_bias": [4, C], sa + "A_logs": [4 * C, N],
                           sa + "Ds": [4 * C], sa + "in_proj.weight": [2 * C, c], sa + "conv2d.weight": [C, 1, 3, 3],
                           sa + "conv2d.bias": [C], sa + "out_norm.weight": [C], sa + "out_norm.bias": [C],
                           sa + "out_proj.weight": [c, C]})
            for k in ("0", "2", "5"):
                for part in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{cb}{k}.{part}"] = [c]
                shapes[f"{cb}{k}.num_batches_tracked"] = []
            for k, kernel in (("1", 3), ("4", 3), ("7", 1)):
                shapes[f"{cb}{k}.weight"], shapes[f"{cb}{k}.bias"] = [c, c, kernel, kernel], [c]
        if i + 1 < len(cfg["dims"]):
            d = f"layers.{i}.downsample."
            shapes.update({d + "norm.weight": [4 * C], d + "norm.bias": [4 * C], d + "reduction.weight": [2 * C, 4 * C]})
    shapes.update({"head.weight": [cfg["num_classes"], cfg["dims"][-1]], "head.bias": [cfg["num_classes"]]})
    return shapes


def model_state(cfg):
    return {k: np.array(7, dtype=np.int64) if k.endswith("num_batches_tracked") else
            (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in model_shapes(cfg).items()}


def bf16(a):
    """float32 -> bfloat16 bits, rounded to nearest even."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def quantize(state):
    """model/quantization.cpp's int8 scheme: I8 weights + NAME_scale, one scale per output channel."""
    out = {}
    for k, w in state.items():
        if not k.endswith(INT8_TAILS):
            out[k] = ("BF16", bf16(w)) if w.dtype == np.float32 else ("I64", w)
            continue
        rows = w.reshape(w.shape[0], -1) if w.ndim == 4 else w.reshape(-1, w.shape[-1])
        m = np.abs(rows).max(axis=1)
        scale = np.where(m > 0, m / 127, 1).astype(np.float32)
        out[k] = ("I8", np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(w.shape))
        out[k + "_scale"] = ("F32", scale)
    return out


DTYPE = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
         np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8"}


def write(name, tensors, metadata=None):
    """tensors: {name: array, or (dtype name, array of its bits)}; sorted by name, as safetensors writes them."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for key in sorted(tensors):
        dtype, a = tensors[key] if isinstance(tensors[key], tuple) else (DTYPE[tensors[key].dtype], tensors[key])
        raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        header[key] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def model_metadata(**extra):
    md = {"format": "medmamba-cpp/1", "config": json.dumps(CONFIG), "class_names": json.dumps(["a", "b", "c"]),
          "preprocess": json.dumps({"input_size": 8, "mean": [0.5], "std": [0.25], "interpolation": "bilinear"})}
    md.update(extra)
    return md


os.makedirs(OUT, exist_ok=True)
write("every_dtype.safetensors", {
    "f32": rng.standard_normal((2, 3)).astype(np.float32), "f16": np.arange(4, dtype=np.float16),
    "bf16": ("BF16", bf16(np.array([1.5, -2.0, 3.25]))), "f64": np.array([[0.5], [1e300]]),
    "i64": np.array([-1, 2**40], dtype=np.int64), "i32": np.array([7], dtype=np.int32),
    "i8": np.array([-127, 0, 127], dtype=np.int8), "u8": np.arange(6, dtype=np.uint8).reshape(1, 2, 3),
    "empty": np.zeros((0, 5), dtype=np.float32)}, metadata={"note": "not a model"})
state = model_state(CONFIG)
write("model_f32.safetensors", state, model_metadata())
scales = {"layers.0.blocks.0.in_proj_x": 0.031, "layers.1.downsample.reduction": 0.5}
write("model_int8_bf16.safetensors", quantize(state), model_metadata(quantization=json.dumps({
    "scheme": "int8-per-channel-symmetric", "weights": "I8 + NAME_scale (F32, per output channel): weight = q * scale",
    "activations": "static per tensor", "activation_scales": scales})))
write("prefixed_no_metadata.safetensors",
      {"model." + k: v if v.dtype != np.float32 else v.astype(np.float16) for k, v in state.items()})
