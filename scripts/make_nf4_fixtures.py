#!/usr/bin/env python3
"""NF4 (QLoRA) fixtures: bitsandbytes' 4-bit NormalFloat quantization with double quantization, in numpy.

bitsandbytes is not needed: its algorithm is reimplemented here from its reference ("default", pure torch) kernels
`quantize_4bit` / `dequantize_4bit` / `quantize_blockwise` / `dequantize_blockwise` and `create_dynamic_map`:

  NF4, blocks of 64 over the flattened row-major [out, in] weight (a block may span rows; the last may be short):
      absmax_b = max |x| over the block;  scaled = clamp(x * (1 / absmax_b), -1, 1)   (F32)
      code     = argmin_j |scaled - NF4[j]|  (F32; ties to the lower index, as torch.argmin)
      packed   = code[2i] << 4 | code[2i+1]  (an odd count leaves the last low nibble 0)
      W'       = NF4[code] * absmax_b        (F32)
  double quantization (bitsandbytes' compress_statistics):
      offset   = mean(absmax)                 (here: summed in order in double precision, then rounded to F32)
      q, a2    = blockwise 8-bit quantization of (absmax - offset) with create_dynamic_map(signed=True), blocks of 256
      absmax'  = DYN[q] * a2_c + offset       (two F32 roundings), and W' = NF4[code] * absmax'
  deviation: a block whose absmax is 0 (or whose reciprocal overflows) is scaled by division, so zeros map to the
  code nearest 0 (bitsandbytes makes NaN of it).

The dynamic map is computed twice, with torch exactly as bitsandbytes writes it (torch.linspace) and in numpy with
fused multiply-adds (what torch's CPU linspace does), and the two must agree bit for bit.

Writes Tests/Fixtures/nf4/nf4.safetensors (< 300 KB):
  dynamic_map                      [256]
  M.input, M.codes (indices as F32), M.packed (bytes as F32), M.absmax, M.dequantized           (no double quant)
  M.dq_codes, M.dq_absmax, M.dq_offset [1], M.dq_dequantized                                  (double quant)
      for M in tail [7, 37] (259 values: an odd count, a short last block, an all-zero block, exact codes and
      midpoints) and wide [129, 129] (261 blocks: one full block of 256 scales and a short one)
  gqa.ids [T]; gqa.logits_f32, gqa.logits_nf4 (double quant), gqa.logits_nf4_nodq [T, vocab]: transformers'
      LlamaForCausalLM on Tests/Fixtures/models/gqa with its seven projections replaced by their NF4 dequantization

Usage:
    /tmp/refenv/bin/python scripts/make_nf4_fixtures.py
"""

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LlamaForCausalLM

from fixture_support import save_tensors

ROOT = Path(__file__).resolve().parent.parent / "Tests" / "Fixtures"
OUT = ROOT / "nf4" / "nf4.safetensors"
GQA = ROOT / "models" / "gqa"

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)
BLOCK, SCALE_BLOCK = 64, 256
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
IDS = [1, 17, 42, 99, 5, 63, 7, 200, 11, 250, 3, 128]


# ---------------------------------------------------------------------------------------------------------------
# The dynamic 8-bit map

def dynamic_map_torch(max_exponent_bits=7, total_bits=8):
    """bitsandbytes.functional.create_dynamic_map(signed=True), verbatim in substance."""
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 256
    data.sort()
    return torch.tensor(data, dtype=torch.float32).numpy()


def fma32(a, b, c):
    """a * b + c with one rounding to F32 (exact rational arithmetic, then one rounding via float64 is safe here:
    the exact value has at most 24 + 24 + a few bits, so float64 holds it exactly)."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    assert Fraction(float(exact)) == exact
    return np.float32(float(exact))


def dynamic_map_numpy():
    data = []
    for i in range(7):
        n = 2 ** i + 1
        start, end = np.float32(0.1), np.float32(1.0)
        step = np.float32((end - start) / np.float32(n - 1))
        b = np.array([fma32(step, k, start) if k < n // 2 else fma32(-step, n - 1 - k, end) for k in range(n)],
                     dtype=np.float32)
        means = (b[:-1] + b[1:]) / np.float32(2)
        scale = np.float32(10.0 ** (i - 6))
        data += list(scale * means)
        data += list(-scale * means)
    data += [np.float32(0), np.float32(1)]
    return np.sort(np.array(data, dtype=np.float32))


DYN = dynamic_map_numpy()


# ---------------------------------------------------------------------------------------------------------------
# Blockwise quantization

def quantize_blockwise(values, block, code):
    """-> (code indices uint8 [n], absmax F32 [blocks])."""
    values = values.astype(np.float32).reshape(-1)
    n = values.size
    blocks = (n + block - 1) // block
    codes = np.zeros(n, dtype=np.uint8)
    absmax = np.zeros(blocks, dtype=np.float32)
    for b in range(blocks):
        x = values[b * block:(b + 1) * block]
        assert np.all(np.isfinite(x))
        m = np.float32(np.abs(x).max())
        absmax[b] = m
        with np.errstate(divide="ignore", over="ignore"):
            inverse = np.float32(1) / m
        if np.isfinite(inverse):
            scaled = x * inverse
        else:
            scaled = (x / m) if m > 0 else np.zeros_like(x)
        scaled = np.clip(scaled, np.float32(-1), np.float32(1)).astype(np.float32)
        distance = np.abs(scaled[:, None] - code[None, :]).astype(np.float32)
        codes[b * block:(b + 1) * block] = np.argmin(distance, axis=1)
    return codes, absmax


def dequantize_blockwise(codes, absmax, block, code):
    scale = np.repeat(absmax, block)[:codes.size]
    return (code[codes] * scale).astype(np.float32)


def quantize_nf4(weight, double_quant):
    codes, absmax = quantize_blockwise(weight, BLOCK, NF4)
    padded = np.append(codes, 0) if codes.size % 2 else codes
    packed = (padded[0::2] << 4) | padded[1::2]
    out = {"codes": codes, "packed": packed.astype(np.uint8), "absmax": absmax}
    if double_quant:
        offset = np.float32(sum(float(v) for v in absmax) / absmax.size)
        dq_codes, dq_absmax = quantize_blockwise((absmax - offset).astype(np.float32), SCALE_BLOCK, DYN)
        scales = (dequantize_blockwise(dq_codes, dq_absmax, SCALE_BLOCK, DYN) + offset).astype(np.float32)
        out.update(dq_codes=dq_codes, dq_absmax=dq_absmax, dq_offset=np.array([offset], dtype=np.float32))
    else:
        scales = absmax
    out["dequantized"] = dequantize_blockwise(codes, scales, BLOCK, NF4).reshape(weight.shape)
    return out


def matrices():
    rng = np.random.default_rng(2024)
    tail = rng.standard_normal((7, 37)).astype(np.float32) * np.float32(0.3)
    flat = tail.reshape(-1)
    flat[64:128] = 0                               # an all-zero block
    flat[0] = 1.0                                  # block 0 has absmax 1: exact codes and midpoints follow
    flat[1:17] = NF4
    flat[17:32] = (NF4[:-1] + NF4[1:]) / np.float32(2)
    wide = (rng.standard_normal((129, 129)) * rng.uniform(0.01, 2.0, (129, 1))).astype(np.float32)
    return {"tail": tail, "wide": wide}


# ---------------------------------------------------------------------------------------------------------------
# The gqa fixture model with NF4 projections

def gqa_logits():
    model = LlamaForCausalLM.from_pretrained(GQA, dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor([IDS])
    out = {"gqa.ids": np.array(IDS, dtype=np.float32)}
    with torch.no_grad():
        out["gqa.logits_f32"] = model(input_ids=ids).logits[0].numpy()
        original = {name: p.detach().clone() for name, p in model.named_parameters()}
        for key, double_quant in [("gqa.logits_nf4", True), ("gqa.logits_nf4_nodq", False)]:
            for name, param in model.named_parameters():
                if any(f".{p}.weight" in name for p in PROJECTIONS):
                    q = quantize_nf4(original[name].numpy(), double_quant)
                    param.copy_(torch.from_numpy(q["dequantized"]))
                else:
                    assert torch.equal(param, original[name])
            out[key] = model(input_ids=ids).logits[0].numpy()
    return out


def save(tensors):
    metadata = {"script": "scripts/make_nf4_fixtures.py", "torch": torch.__version__,
                "transformers": transformers.__version__}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(OUT, tensors, metadata)


def main():
    torch_map = dynamic_map_torch()
    assert np.array_equal(torch_map.view(np.uint32), DYN.view(np.uint32)), "dynamic map: numpy and torch differ"
    tensors = {"dynamic_map": DYN}
    for name, weight in matrices().items():
        plain, dq = quantize_nf4(weight, False), quantize_nf4(weight, True)
        assert np.array_equal(plain["codes"], dq["codes"]) and np.array_equal(plain["absmax"], dq["absmax"])
        tensors[f"{name}.input"] = weight
        for key in ["codes", "packed", "absmax", "dequantized"]:
            tensors[f"{name}.{key}"] = plain[key].astype(np.float32)
        for key in ["dq_codes", "dq_absmax", "dq_offset"]:
            tensors[f"{name}.{key}"] = dq[key].astype(np.float32)
        tensors[f"{name}.dq_dequantized"] = dq["dequantized"]
        err = np.abs(dq["dequantized"] - weight).max() / np.abs(weight).max()
        print(f"{name}: {weight.shape}, {dq['absmax'].size} blocks, max |W' - W| / max |W| = {err:.4f}")
    tensors.update(gqa_logits())
    for key in ["gqa.logits_nf4", "gqa.logits_nf4_nodq"]:
        print(f"{key}: max |Δ| vs F32 logits = {np.abs(tensors[key] - tensors['gqa.logits_f32']).max():.4f}")
    save(tensors)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
