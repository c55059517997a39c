#!/usr/bin/env python3
"""GGUF quantization fixtures: llama.cpp's Q8_0 blocks as gguf-py (the gguf package, bit for bit ggml's reference
quantizer) writes them, for `lora merge --format gguf --dtype q8_0`.

Q8_0 stores each run of 32 values of a row as an F16 scale d = max|x| / 127 and 32 bytes round(x · (1/d)), rounded
half away from zero; it reads back as d · q.

Writes Tests/Fixtures/gguf-quant/q8_0.gguf (a few KB), a GGUF file made by gguf-py's GGUFWriter with
  input        F32  [4, 96]  rows of 3 blocks: normal values, tiny values with an all-zero block, large values,
                             and blocks whose scale is exactly 1 so that x · (1/d) falls on .5 (ties) and on ±127
  quantized    Q8_0 [4, 96]  gguf.quants.quantize(input, Q8_0)
  dequantized  F32  [4, 96]  gguf.quants.dequantize(quantized, Q8_0)

Usage:
    /tmp/refenv/bin/python scripts/make_gguf_quant_fixtures.py            # regenerate, then verify
    /tmp/refenv/bin/python scripts/make_gguf_quant_fixtures.py --check    # only verify the committed file
"""

import numpy as np
import gguf
from gguf.quants import quantize, dequantize

from fixture_support import REPO, fixture_size, run

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


def write():
    x = make_input()
    q = quantize(x, Q8_0)
    writer = gguf.GGUFWriter(str(OUT / "q8_0.gguf"), "llama")
    writer.add_tensor("input", x)
    writer.add_tensor("quantized", q, raw_dtype=Q8_0)
    writer.add_tensor("dequantized", dequantize(q, Q8_0).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check():
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
    print(f"gguf-quant: q8_0.gguf verified ({fixture_size(OUT)} bytes)")


if __name__ == "__main__":
    run(__doc__, OUT, write, check)
