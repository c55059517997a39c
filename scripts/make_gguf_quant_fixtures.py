#!/usr/bin/env python3
"""GGUF quantization fixtures: llama.cpp's quantized blocks as gguf-py (the gguf package, bit for bit ggml's
reference code) writes and reads them, for `lora merge --format gguf --dtype q8_0` and for reading quantized models.

Q8_0 stores each run of 32 values of a row as an F16 scale d = max|x| / 127 and 32 bytes round(x · (1/d)), rounded
half away from zero; it reads back as d · q.

Writes Tests/Fixtures/gguf-quant/q8_0.gguf (a few KB), a GGUF file made by gguf-py's GGUFWriter with
  input        F32  [4, 96]  rows of 3 blocks: normal values, tiny values with an all-zero block, large values,
                             and blocks whose scale is exactly 1 so that x · (1/d) falls on .5 (ties) and on ±127
  quantized    Q8_0 [4, 96]  gguf.quants.quantize(input, Q8_0)
  dequantized  F32  [4, 96]  gguf.quants.dequantize(quantized, Q8_0)

and Tests/Fixtures/gguf-quant/dequant.gguf (about 45 KB), the types LoRAKit reads but does not write; for each T of
Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K:
  T              T    [2, 512]  raw blocks: every byte uniformly random (so every bit of the codes and of the packed
                                sub-block scales is exercised) except the F16 scales (d, and m / dmin where the type
                                has one), drawn as ±2^[-12, -2), with a zero, a subnormal and an F16 max among
                                them; for Q4_0-Q5_1 row 1 is instead gguf.quants.quantize of normal values
  T.dequantized  F32  [2, 512]  gguf.quants.dequantize(T, T)

Usage:
    /tmp/refenv/bin/python scripts/make_gguf_quant_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_gguf_quant_fixtures.py --check    # only verify the committed files
"""

import numpy as np
import gguf
from gguf.quants import quantize, dequantize

from fixture_support import REPO, finish_gguf, fixture_size, run

OUT = REPO / "Tests" / "Fixtures" / "gguf-quant"
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def make_input():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 96)).astype(np.float32)
    x[1] *= np.float32(1e-3)
    x[1, 32:64] = 0                                   # an all-zero block: scale 0, every value 0
    x[2] *= np.float32(300)
    # scale exactly 1 (max |x| = 127): x · (1/d) = x, so halves are ties and ±127 the extremes
    x[3, :32] = np.concatenate([[127, -127], np.arange(30) - 14.5]).astype(np.float32)
    x[3, 32:64] = np.concatenate([[-127], np.arange(31) * 4 - 60.5]).astype(np.float32)
    return x


def write_q8_0():
    x = make_input()
    q = quantize(x, Q8_0)
    writer = gguf.GGUFWriter(str(OUT / "q8_0.gguf"), "llama")
    writer.add_tensor("input", x)
    writer.add_tensor("quantized", q, raw_dtype=Q8_0)
    writer.add_tensor("dequantized", dequantize(q, Q8_0).astype(np.float32))
    finish_gguf(writer)


def check_q8_0():
    reader = gguf.GGUFReader(str(OUT / "q8_0.gguf"))
    tensors = {t.name: t for t in reader.tensors}
    x = np.array(tensors["input"].data).reshape(4, 96)
    assert (x == make_input()).all(), "input"
    q = tensors["quantized"]
    assert q.tensor_type == Q8_0
    assert np.array(q.data).tobytes() == quantize(make_input(), Q8_0).tobytes(), "quantized bytes"
    back = np.array(tensors["dequantized"].data).reshape(4, 96)
    assert (back == dequantize(np.array(q.data), Q8_0).reshape(4, 96)).all(), "dequantized"
    assert (back[1, 32:64] == 0).all() and (back[3, :2] == [127, -127]).all()
    print(f"gguf-quant: q8_0.gguf verified ({(OUT / 'q8_0.gguf').stat().st_size} bytes)")


# Byte offsets of the F16 scales in a block of each type (ggml-common.h's block_* structs; gguf-py's quants.py).
SCALE_OFFSETS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
DEQUANT_TYPES = [gguf.GGMLQuantizationType[name] for name in SCALE_OFFSETS]
ROWS, ROW = 2, 512


def make_blocks(qtype, seed):
    """[ROWS, ROW / block size · block bytes] uint8: random blocks of `qtype` with finite F16 scales."""
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * ROW // block_size
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    offsets = SCALE_OFFSETS[qtype.name]
    scales = (rng.choice([-1, 1], size=(n_blocks, len(offsets)))
              * np.exp2(rng.uniform(-12, -2, size=(n_blocks, len(offsets))))).astype(np.float16)
    scales[0, 0] = 0                      # a zero scale: the block is 0 (or −dmin·min, or m)
    scales[1, 0] = np.float16(2.0 ** -20)  # a subnormal F16
    scales[2, -1] = np.float16(-65504)     # the largest F16, as d or as dmin / m
    for k, offset in enumerate(offsets):
        blocks[:, offset:offset + 2] = np.ascontiguousarray(scales[:, k]).view(np.uint8).reshape(n_blocks, 2)
    if qtype.name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        # row 1: what llama.cpp's reference quantizer makes of normal weights
        x = rng.standard_normal(ROW).astype(np.float32) * np.float32(0.02)
        blocks[n_blocks // 2:] = quantize(x.reshape(1, ROW), qtype).reshape(n_blocks // 2, block_bytes)
    return blocks.reshape(ROWS, -1)


def write_dequant():
    writer = gguf.GGUFWriter(str(OUT / "dequant.gguf"), "llama")
    for seed, qtype in enumerate(DEQUANT_TYPES):
        raw = make_blocks(qtype, seed)
        writer.add_tensor(qtype.name, raw, raw_dtype=qtype)
        writer.add_tensor(qtype.name + ".dequantized", dequantize(raw, qtype).astype(np.float32))
    finish_gguf(writer)


def check_dequant():
    reader = gguf.GGUFReader(str(OUT / "dequant.gguf"))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * len(DEQUANT_TYPES), sorted(tensors)
    for seed, qtype in enumerate(DEQUANT_TYPES):
        raw = tensors[qtype.name]
        assert raw.tensor_type == qtype, qtype.name
        assert [int(n) for n in raw.shape] == [ROW, ROWS], (qtype.name, raw.shape)   # ggml order: innermost first
        blocks = np.array(raw.data).reshape(ROWS, -1)
        assert blocks.tobytes() == make_blocks(qtype, seed).tobytes(), qtype.name + " bytes"
        want = np.array(tensors[qtype.name + ".dequantized"].data).reshape(ROWS, ROW)
        assert want.dtype == np.float32
        got = dequantize(blocks, qtype)
        assert got.tobytes() == want.tobytes(), qtype.name + " dequantized"
        assert np.isfinite(want).all(), qtype.name + " has non-finite values"
    print(f"gguf-quant: dequant.gguf verified ({(OUT / 'dequant.gguf').stat().st_size} bytes, "
          f"{', '.join(t.name for t in DEQUANT_TYPES)})")


def write():
    write_q8_0()
    write_dequant()


def check():
    check_q8_0()
    check_dequant()
    print(f"gguf-quant: {fixture_size(OUT)} bytes in all")


if __name__ == "__main__":
    run(__doc__, OUT, write, check)
