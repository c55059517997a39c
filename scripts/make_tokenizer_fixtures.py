#!/usr/bin/env python3
"""Writes the SentencePiece fixtures of TokenizerTests.

Trains a unigram and a bpe model with Python SentencePiece on a corpus this script generates itself (ASCII
words, accented Latin, a few CJK characters, digits), then records what Python SentencePiece does with them:
ids and pieces of a list of test strings, decode(encode(text)), special ids, and id -> piece/score/type.

    /tmp/refenv/bin/python scripts/make_tokenizer_fixtures.py

Outputs Tests/Fixtures/tokenizer/{unigram.model,bpe.model,normalized.model,expected.json}. normalized.model is
a small unigram model with custom normalization rules (no byte fallback, default whitespace handling): it
carries a precompiled normalization trie, the part of a model file that the Swift binding checks itself.
Needs only `sentencepiece`.
"""
import json
import os
import random
import sys
import tempfile

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer")
VOCAB_SIZE = 400
NORMALIZED_VOCAB_SIZE = 150
USER_DEFINED = ["<sep>"]

# The training text: none of the test strings' rarer characters (tab, emoji, 龘) appear in it, so encoding
# them needs byte fallback.
CONSONANTS = "bcdfghjklmnprstvwz"
VOWELS = "aeiou"
ACCENTED = ["café", "naïve", "Ångström", "señor", "façade", "über", "déjà", "crème", "brûlée", "smørrebrød",
            "Ærø", "jalapeño", "coöperate", "résumé", "Zoë"]
CJK = ["日本語", "の", "テキスト", "東京", "大学", "中国", "文字", "学生", "日本", "語"]
COMMON = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "llama", "model",
          "token", "text", "and", "of", "to", "in", "is", "it", "with", "for", "on", "that", "this", "line"]


def word(rng):
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(1, 3)))


def sentence(rng):
    parts = []
    for _ in range(rng.randint(4, 12)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(COMMON))
        elif r < 0.70:
            parts.append(word(rng))
        elif r < 0.80:
            parts.append(rng.choice(ACCENTED))
        elif r < 0.90:
            parts.append("".join(rng.choice(CJK) for _ in range(rng.randint(1, 3))))
        else:
            parts.append(str(rng.randint(0, 99999)) if rng.random() < 0.7 else f"{rng.randint(0, 99)}.{rng.randint(0, 9999)}")
    text = " ".join(parts)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text + rng.choice([".", ",", "!", "?", ":", ""])


def corpus_lines(seed=1234, count=3000):
    rng = random.Random(seed)
    lines = [sentence(rng) for _ in range(count)]
    lines.append("<s> and </s> are written as text here")
    return lines


# The LLaMA-style trainer settings, the same as SentencePieceTokenizer.train uses.
def train(input_path, prefix, model_type):
    spm.SentencePieceTrainer.train(
        input=input_path, model_prefix=prefix, model_type=model_type, vocab_size=VOCAB_SIZE,
        character_coverage=1.0, byte_fallback=True, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        user_defined_symbols=USER_DEFINED, num_threads=1, minloglevel=2)


# Normalization rules (tsv: source code points, target code points): fullwidth Latin letters to ASCII and a few
# compatibility characters. They compile into the model's precompiled trie.
NORMALIZATION_RULES = ([(0xFF21 + i, [0x41 + i]) for i in range(26)] + [(0xFF41 + i, [0x61 + i]) for i in range(26)]
                       + [(0xFB01, [0x66, 0x69]), (0x2460, [0x31]), (0x212B, [0xC5])])


def train_normalized(input_path, prefix, tmp):
    rules = os.path.join(tmp, "rules.tsv")
    with open(rules, "w", encoding="utf-8") as f:
        for source, target in NORMALIZATION_RULES:
            f.write(f"{source:X}\t{' '.join(f'{t:X}' for t in target)}\n")
    spm.SentencePieceTrainer.train(
        input=input_path, model_prefix=prefix, model_type="unigram", vocab_size=NORMALIZED_VOCAB_SIZE,
        character_coverage=1.0, normalization_rule_tsv=rules, num_threads=1, minloglevel=2)


TEST_STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "café naïve Ångström",
    "日本語のテキスト",
    "🦙",
    "a llama 🦙 emoji",
    "龘 is a rare character",
    "12345 3.14159",
    "  two leading spaces",
    "trailing spaces  ",
    "double  space",
    "tab\tseparated\ttext",
    "line one\nline two\n",
    "",
    " ",
    "<s> and </s> are text",
    "before<sep>after",
    "nul\u0000byte",
    "mixed: café 日本 42 🦙\t!",
]

# For normalized.model: rules apply, runs of spaces collapse, characters outside the training text are <unk>.
NORMALIZED_TEST_STRINGS = [
    "Hello world",
    "Ｈｅｌｌｏ ｗｏｒｌｄ",
    "ﬁne ① Å",
    "  many   spaces  ",
    "café 日本語",
    "🦙 unknown",
    "",
]


def varint(data, pos):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def proto_piece_types(path):
    """Reads the `type` of every piece straight from the ModelProto wire format (Python SentencePiece has no
    IsUserDefined), an independent check of the Swift binding's own reader."""
    data = open(path, "rb").read()
    types, pos = [], 0
    while pos < len(data):
        key, pos = varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = varint(data, pos)
            if field == 1:  # repeated SentencePiece pieces
                sub, end, piece_type = pos, pos + length, 1
                while sub < end:
                    k, sub = varint(data, sub)
                    f, w = k >> 3, k & 7
                    if w == 0:
                        v, sub = varint(data, sub)
                        if f == 3:
                            piece_type = v
                    elif w == 1:
                        sub += 8
                    elif w == 5:
                        sub += 4
                    elif w == 2:
                        n, sub = varint(data, sub)
                        sub += n
                    else:
                        sys.exit(f"{path}: unexpected wire type {w}")
                types.append(piece_type)
            pos += length
        else:
            sys.exit(f"{path}: unexpected wire type {wire}")
    names = {1: "normal", 2: "unknown", 3: "control", 4: "userDefined", 5: "unused", 6: "byte"}
    return [names[t] for t in types]


def record(model_path, test_strings):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    types = proto_piece_types(model_path)
    assert len(types) == sp.get_piece_size()
    for i, t in enumerate(types):  # the proto reader agrees with the processor where both can tell
        assert (t == "unknown") == sp.is_unknown(i) and (t == "control") == sp.is_control(i)
        assert (t == "byte") == sp.is_byte(i) and (t == "unused") == sp.is_unused(i)
    cases = []
    for text in test_strings:
        ids = sp.encode(text, out_type=int)
        cases.append({"text": text, "ids": ids, "pieces": [sp.id_to_piece(i) for i in ids],
                      "decoded": sp.decode(ids)})
    size = sp.get_piece_size()
    probe = sorted({0, 1, 2, 3, 4, size // 2, size - 2, size - 1})
    # Ids whose decoding is known: the special pieces decode to nothing, <unk> to " ⁇ ".
    decode_ids = [[1, 5, 2], [0], [], [size - 1, size // 2, 4]]
    if "byte" in types:
        byte_a = sp.piece_to_id("<0x41>")
        probe = sorted(set(probe) | {byte_a, 3 + 256, 3 + 256 + 1})
        # 日 is E6 97 A5: three byte pieces decode to one character.
        decode_ids += [[1, byte_a, 2], [sp.piece_to_id(f"<0x{b:02X}>") for b in "日".encode()]]
    pieces = [{"id": i, "piece": sp.id_to_piece(i), "score": sp.get_score(i), "type": types[i]} for i in probe]
    return {
        "vocab_size": size, "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "pad_id": sp.pad_id(),
        "unk_id": sp.unk_id(), "cases": cases, "pieces": pieces,
        "type_counts": {name: types.count(name) for name in sorted(set(types))},
        "decode_cases": [{"ids": ids, "decoded": sp.decode(ids)} for ids in decode_ids],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {"generator": "scripts/make_tokenizer_fixtures.py", "sentencepiece_version": spm.__version__,
                "models": {}}
    # Train inside a temporary directory with relative paths: a model records its input and prefix paths, so
    # this keeps the committed files the same from run to run.
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            with open("corpus.txt", "w", encoding="utf-8") as f:
                f.write("\n".join(corpus_lines()) + "\n")
            for model_type in ["unigram", "bpe"]:
                train("corpus.txt", model_type, model_type)
                target = os.path.join(OUT, f"{model_type}.model")
                os.replace(f"{model_type}.model", target)
                expected["models"][model_type] = {"file": f"{model_type}.model", **record(target, TEST_STRINGS)}
            train_normalized("corpus.txt", "normalized", ".")
            target = os.path.join(OUT, "normalized.model")
            os.replace("normalized.model", target)
            expected["models"]["normalized"] = {"file": "normalized.model",
                                                **record(target, NORMALIZED_TEST_STRINGS)}
        finally:
            os.chdir(cwd)
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
