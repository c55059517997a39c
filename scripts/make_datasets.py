#!/usr/bin/env python3
"""Writes LoRAKit's shipped datasets: a pretraining corpus, an instruction-tuning set and its prompt template.

    python3 scripts/make_datasets.py

The quickstart pretrains a small base on datasets/corpus.txt, then teaches it with LoRA one task family that the
corpus never shows (the NEW family, `smallest`), while the other families, which the corpus does show, are
re-tested to measure forgetting. Every text is generated here from hand-written word lists and a seeded
generator; only the Python standard library is used, and the output is the same bytes on every run and every
Python 3 version (the generator is SplitMix64, not `random`, whose algorithms may change between versions).

The families have one-token answers found by counting, comparing or pointing. A base of a few million
parameters pretrained for ~15 CPU minutes learns these, but not to copy a sequence of words (so not to
reverse one): datasets/README.md says more.

Outputs (see datasets/README.md):
  datasets/template.json                compact alpaca-lora-style template (one line per field)
  datasets/corpus.txt                   pretraining text: one paragraph per example or per group of sentences
  datasets/instructions/train.json      fine-tuning records, 60% new family, 40% replay of the old families
  datasets/instructions/val.json        validation records, same mix as train
  datasets/instructions/test.json       held-out records, same mix as train (what the quickstart scores)
"""
import json
import os
import sys

SEED = 20240605
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "datasets")

NEW_FAMILY = "smallest"
OLD_FAMILIES = ["count", "largest", "first", "last"]
FAMILIES = OLD_FAMILIES + [NEW_FAMILY]

TRAIN_SIZE = 3000
VAL_SIZE = 200
TEST_SIZE = 400                 # same mix as train: the headline figure is on the fine-tuning task
NEW_SHARE = 0.6                 # share of the new family in every split; the rest is replay, split evenly
CORPUS_PER_FAMILY = 3750        # examples of each old family in the corpus
CORPUS_SENTENCE_PARAGRAPHS = 2000

# One line per field and no preamble: few tokens per example, and no blank line inside an example, so a corpus
# paragraph is one whole example. The prompt ends at "Response:" without a space: LoRAKit encodes the output
# separately and SentencePiece gives it a leading "▁", so a corpus example written as prompt + " " + output is
# tokenized exactly as fine-tuning tokenizes the record. A space (not a newline) after each colon gives every
# word its usual "▁word" pieces.
TEMPLATE = {
    "description": "Compact template of LoRAKit's shipped datasets: one line per field, no preamble. "
                   "The response follows the prompt after one space.",
    "prompt_input": "### Instruction: {instruction}\n### Input: {input}\n### Response:",
    "prompt_no_input": "### Instruction: {instruction}\n### Response:",
    "response_split": "### Response:",
}

# ---------------------------------------------------------------------------------------------------------------
# Word lists, written for this script. Categories are disjoint; every letter a-z occurs.

NOUNS = """
cat dog bird fish horse cow sheep goat pig duck mouse rabbit fox wolf bear lion tiger frog snake bee ant owl deer
zebra whale crab goose
house door window room wall roof floor table chair bed lamp cup plate bowl spoon fork knife box bag basket bottle
jar key clock book letter paper pen pencil map picture card
tree flower leaf grass seed root forest garden field hill mountain river lake sea ocean island beach sand stone
rock cave valley
sun moon star sky cloud rain snow wind storm fire water ice air shadow
road street bridge town city village farm market shop school church castle tower park station harbor
car bus train boat ship plane bike wheel truck
bread cake apple lemon cherry grape pear plum bean corn rice soup milk cheese egg butter honey salt sugar tea
juice
shirt coat hat shoe sock dress belt scarf glove
man woman boy girl child baby friend teacher farmer doctor king queen baker sailor painter singer student driver
nurse
hand foot head eye ear nose mouth face arm leg hair heart
song game story dream idea plan question answer name word voice music
morning evening night day week year summer winter autumn
ball kite drum bell doll toy rope ladder bucket hammer nail brush candle mirror pillow blanket
gold silver iron wood glass
nest pearl coin bank ticket tent flag pocket button needle thread cart wagon sled rocket robot piano violin guitar
flute camera radio desk shelf sofa carpet curtain oven kettle pan pot tray towel soap comb sponge fence gate path
tunnel pond stream meadow desert jungle cliff shore wave bay planet comet feather tail wing horn paw claw
""".split()

ADJECTIVES = """
big small tall short long old young new warm cold hot cool wet dry soft hard loud quiet fast slow happy sad angry
calm brave kind wild gentle bright dark clean dirty empty full heavy rich poor strong weak thin thick wide narrow
deep sharp sweet sour fresh busy lazy clever silly funny tiny huge round flat smooth rough shiny pale
red blue green yellow white black brown pink purple gray
proud polite shy lucky famous hungry sleepy thirsty early late cheap broken hidden simple strange quick noisy tidy
pretty fancy plain cozy sunny rainy windy snowy foggy frozen golden wooden lovely jolly fuzzy
bitter salty spicy crisp tender fierce eager nervous curious careful honest loyal humble grumpy cheerful clumsy
graceful ancient modern giant fluffy sticky dusty muddy rusty shallow steep hollow solid crooked dizzy
""".split()

# (base, third person singular, past) of verbs that take an object.
TRANSITIVE = [tuple(v.split("/")) for v in """
see/sees/saw find/finds/found take/takes/took make/makes/made hold/holds/held bring/brings/brought
carry/carries/carried like/likes/liked love/loves/loved want/wants/wanted watch/watches/watched
follow/follows/followed help/helps/helped paint/paints/painted draw/draws/drew build/builds/built
push/pushes/pushed pull/pulls/pulled throw/throws/threw catch/catches/caught keep/keeps/kept sell/sells/sold
buy/buys/bought wash/washes/washed cook/cooks/cooked eat/eats/ate drink/drinks/drank read/reads/read
write/writes/wrote hear/hears/heard touch/touches/touched visit/visits/visited chase/chases/chased
fix/fixes/fixed move/moves/moved lift/lifts/lifted drop/drops/dropped hide/hides/hid meet/meets/met
call/calls/called share/shares/shared mend/mends/mended kick/kicks/kicked fold/folds/folded pour/pours/poured
plant/plants/planted pack/packs/packed greet/greets/greeted feed/feeds/fed teach/teaches/taught ride/rides/rode
wear/wears/wore sew/sews/sewed steal/steals/stole borrow/borrows/borrowed guard/guards/guarded
""".split()]

# (base, third person singular, past) of verbs without an object.
INTRANSITIVE = [tuple(v.split("/")) for v in """
run/runs/ran walk/walks/walked sing/sings/sang sleep/sleeps/slept swim/swims/swam jump/jumps/jumped
dance/dances/danced smile/smiles/smiled laugh/laughs/laughed play/plays/played rest/rests/rested
wait/waits/waited shine/shines/shone fly/flies/flew sit/sits/sat stand/stands/stood fall/falls/fell
grow/grows/grew cry/cries/cried climb/climbs/climbed shout/shouts/shouted whisper/whispers/whispered
wander/wanders/wandered hurry/hurries/hurried float/floats/floated sink/sinks/sank dive/dives/dived
crawl/crawls/crawled bounce/bounces/bounced sneeze/sneezes/sneezed yawn/yawns/yawned
""".split()]

# Names give the corpus every capital letter.
NAMES = """
Anna Ben Clara David Emma Felix Grace Hugo Iris Jack Kate Leo Mia Noah Olga Paul Quinn Rosa Sam Tom Uma Victor
Wendy Xavier Yara Zoe
""".split()

PREPOSITIONS = ["in", "on", "near", "under", "behind", "beside", "over", "by", "with"]
TIME_WORDS = ["yesterday", "today", "at noon", "at night", "in the morning", "in the evening", "last week"]

VERB_BASES = [v[0] for v in TRANSITIVE + INTRANSITIVE]
# The words the tasks draw from: nouns, adjectives and verbs in their base form.
TASK_WORDS = NOUNS + ADJECTIVES + VERB_BASES


# ---------------------------------------------------------------------------------------------------------------
# A seeded generator whose output does not depend on the Python version.

class SplitMix64:
    """SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, one multiply-xorshift mix per draw."""
    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.state = seed & self.MASK

    def next64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & self.MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
        return z ^ (z >> 31)

    def below(self, n):
        """Uniform in [0, n), without modulo bias (rejects the top partial range)."""
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = self.next64()
            if x < limit:
                return x % n

    def between(self, lo, hi):
        """Uniform in [lo, hi], both ends included."""
        return lo + self.below(hi - lo + 1)

    def uniform(self):
        return (self.next64() >> 11) / float(1 << 53)

    def choice(self, items):
        return items[self.below(len(items))]

    def shuffle(self, items):
        """Fisher-Yates, in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample(self, items, k):
        """k distinct items, in random order."""
        pool = list(items)
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


# ---------------------------------------------------------------------------------------------------------------
# Task families. Each returns (instruction, input, output); the answer is exact after trimming.

def digit_list(rng):
    """3 to 6 distinct digits in random order: the smallest and the largest always differ."""
    return rng.sample(list(range(10)), rng.between(3, 6))


def make_count(rng, words):
    chosen = rng.sample(words, rng.between(1, 9))
    return "How many words are there?", " ".join(chosen), str(len(chosen))


def make_largest(rng, words):
    digits = digit_list(rng)
    return "Which number is the largest?", " ".join(str(d) for d in digits), str(max(digits))


def make_first(rng, words):
    digits = digit_list(rng)
    return "What is the first number?", " ".join(str(d) for d in digits), str(digits[0])


def make_last(rng, words):
    # The list is in the instruction, so this family uses the template's no-input prompt.
    digits = digit_list(rng)
    return f"What is the last number in {' '.join(str(d) for d in digits)}?", "", str(digits[-1])


def make_smallest(rng, words):
    digits = digit_list(rng)
    return "Which number is the smallest?", " ".join(str(d) for d in digits), str(min(digits))


MAKERS = {"count": make_count, "largest": make_largest, "first": make_first, "last": make_last,
          "smallest": make_smallest}
NEW_INSTRUCTION = "Which number is the smallest?"
NEW_KEYWORD = "smallest"        # never in the corpus


def answer(record):
    """The answer recomputed from a record's text alone, to check the generators."""
    family, words = record["family"], record["input"].split()
    if family == "count":
        return str(len(words))
    if family == "largest":
        return str(max(int(w) for w in words))
    if family == "smallest":
        return str(min(int(w) for w in words))
    if family == "first":
        return words[0]
    if family == "last":
        return record["instruction"].rstrip("?").split()[-1]
    raise ValueError(f"unknown family {family}")


def digit_set(input_text):
    """The digits of a digit-list input as a sorted string: "7 2 9" -> "279"."""
    return "".join(sorted(input_text.split()))


# ---------------------------------------------------------------------------------------------------------------
# Plain sentences from a small grammar, so the base is a language model too.

def with_article(rng, word, definite_share=0.5):
    if rng.uniform() < definite_share:
        return "the " + word
    return ("an " if word[0] in "aeiou" else "a ") + word


def noun_phrase(rng, names=False):
    if names and rng.uniform() < 0.25:
        return rng.choice(NAMES)
    if rng.uniform() < 0.5:
        return with_article(rng, rng.choice(ADJECTIVES) + " " + rng.choice(NOUNS))
    return with_article(rng, rng.choice(NOUNS))


def sentence(rng):
    kind = rng.below(8)
    subject = noun_phrase(rng, names=True)
    if kind == 0:
        text = f"{subject} {rng.choice(TRANSITIVE)[1]} {noun_phrase(rng)}"
    elif kind == 1:
        text = f"{subject} {rng.choice(INTRANSITIVE)[1]} {rng.choice(PREPOSITIONS)} {noun_phrase(rng)}"
    elif kind == 2:
        text = f"{subject} is {rng.choice(ADJECTIVES)}"
    elif kind == 3:
        first, second = rng.sample(ADJECTIVES, 2)
        text = f"{subject} was {first} and {second}"
    elif kind == 4:
        text = f"{rng.choice(TIME_WORDS)} {subject} {rng.choice(TRANSITIVE)[2]} {noun_phrase(rng)}"
    elif kind == 5:
        text = f"{subject} will {rng.choice(TRANSITIVE)[0]} {noun_phrase(rng)}"
    elif kind == 6:
        text = f"{subject} can {rng.choice(INTRANSITIVE)[0]} {rng.choice(PREPOSITIONS)} {noun_phrase(rng)}"
    else:
        text = f"there is {with_article(rng, rng.choice(NOUNS), 0.0)} {rng.choice(PREPOSITIONS)} {noun_phrase(rng)}"
    return text[0].upper() + text[1:] + "."


def sentence_paragraph(rng):
    return " ".join(sentence(rng) for _ in range(rng.between(1, 3)))


# ---------------------------------------------------------------------------------------------------------------

def prompt(instruction, input_text):
    if input_text:
        return TEMPLATE["prompt_input"].format(instruction=instruction, input=input_text)
    return TEMPLATE["prompt_no_input"].format(instruction=instruction)


def record(family, triple):
    instruction, input_text, output = triple
    return {"instruction": instruction, "input": input_text, "output": output, "family": family}


def draw_unique(rng, family, count, used, allowed=lambda triple: True):
    """`count` records of `family` whose (instruction, input) is not in `used` and that `allowed` accepts;
    adds their keys to `used`."""
    records = []
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > 1000 * count + 10000:
            sys.exit(f"make_datasets: family {family} ran out of distinct examples ({len(records)} of {count})")
        triple = MAKERS[family](rng, TASK_WORDS)
        key = (triple[0], triple[1])
        if key in used or not allowed(triple):
            continue
        used.add(key)
        records.append(record(family, triple))
    return records


def split_counts(total):
    """Records per family for a split of `total` records: NEW_SHARE new, the rest even over the old families."""
    new = round(total * NEW_SHARE)
    per_old, extra = divmod(total - new, len(OLD_FAMILIES))
    counts = {f: per_old + (1 if i < extra else 0) for i, f in enumerate(OLD_FAMILIES)}
    counts[NEW_FAMILY] = new
    return counts


def write_json(path, records):
    # One record per line: small diffs, readable with `head`, still a JSON array.
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    write_text(path, "[\n" + ",\n".join(lines) + "\n]\n")


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def check_word_lists():
    seen = {}
    for name, words in [("NOUNS", NOUNS), ("ADJECTIVES", ADJECTIVES), ("verb bases", VERB_BASES)]:
        for w in words:
            assert w.isascii() and w.isalpha() and w.islower(), f"{name}: bad word {w!r}"
            assert w not in seen, f"{w!r} is in both {seen[w]} and {name}"
            seen[w] = name
    letters = set("".join(TASK_WORDS))
    assert letters == set("abcdefghijklmnopqrstuvwxyz"), f"missing letters: {sorted(set('abcdefghijklmnopqrstuvwxyz') - letters)}"
    assert NEW_KEYWORD not in seen


def main():
    check_word_lists()
    rng = SplitMix64(SEED)

    # Splits: test, then val, then train; one shared key set keeps them disjoint. The new family's train records
    # also avoid every digit set of its val/test records (in any order), so its test checks the rule, not
    # remembered sets.
    used = set()
    splits = {"test": split_counts(TEST_SIZE), "val": split_counts(VAL_SIZE),
              "train": split_counts(TRAIN_SIZE)}
    records = {}
    held_out_sets = set()
    for split, counts in splits.items():
        rows = []
        for family in FAMILIES:
            allowed = lambda triple: True
            if family == NEW_FAMILY and split == "train":
                allowed = lambda triple: digit_set(triple[1]) not in held_out_sets
            drawn = draw_unique(rng, family, counts[family], used, allowed)
            if family == NEW_FAMILY and split != "train":
                held_out_sets.update(digit_set(r["input"]) for r in drawn)
            rows += drawn
        rng.shuffle(rows)
        records[split] = rows
    held_out_keys = {(r["instruction"], r["input"]) for s in ("val", "test") for r in records[s]}

    # Corpus: old families only (never a val/test prompt), interleaved with sentence paragraphs.
    paragraphs = []
    for family in OLD_FAMILIES:
        made = 0
        while made < CORPUS_PER_FAMILY:
            instruction, input_text, output = MAKERS[family](rng, TASK_WORDS)
            if (instruction, input_text) in held_out_keys:
                continue
            paragraphs.append(prompt(instruction, input_text) + " " + output)
            made += 1
    paragraphs += [sentence_paragraph(rng) for _ in range(CORPUS_SENTENCE_PARAGRAPHS)]
    rng.shuffle(paragraphs)
    corpus = "\n\n".join(paragraphs) + "\n"

    # Checks: the new family is absent from the corpus; splits are disjoint; every character and word is known.
    assert NEW_KEYWORD not in corpus.lower(), "the corpus mentions the new family"
    assert NEW_INSTRUCTION not in corpus
    for p in paragraphs:
        assert "\n\n" not in p and p == p.strip(), "a paragraph holds a blank line or outer whitespace"
    keys = {s: [(r["instruction"], r["input"]) for r in rows] for s, rows in records.items()}
    for s in keys:
        assert len(set(keys[s])) == len(keys[s]), f"{s} holds a duplicate prompt"
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(keys[a]) & set(keys[b]), f"{a} and {b} share a prompt"
    for r in records["train"]:
        if r["family"] == NEW_FAMILY:
            assert digit_set(r["input"]) not in held_out_sets, "a held-out digit set is in train"
    for s, rows in records.items():
        for r in rows:
            assert r["output"] == answer(r), f"{s}: wrong answer in {r!r}"
    corpus_chars = set(corpus)
    needed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    assert needed <= corpus_chars, f"corpus lacks {sorted(needed - corpus_chars)}"
    split_chars = {c for rows in records.values() for r in rows for c in r["instruction"] + r["input"] + r["output"]}
    assert split_chars <= corpus_chars, f"characters missing from the corpus: {sorted(split_chars - corpus_chars)}"
    corpus_words = set(corpus.replace(".", " ").replace("?", " ").lower().split())
    missing = [w for w in TASK_WORDS if w not in corpus_words]
    assert not missing, f"words never in the corpus: {missing[:10]}"

    write_text(os.path.join(OUT, "template.json"), json.dumps(TEMPLATE, indent=2) + "\n")
    write_text(os.path.join(OUT, "corpus.txt"), corpus)
    for split, rows in records.items():
        write_json(os.path.join(OUT, "instructions", f"{split}.json"), rows)

    print(f"seed {SEED}; new family: {NEW_FAMILY} (absent from the corpus; its train records avoid the "
          f"{len(held_out_sets)} digit sets of its val/test records)")
    print(f"{'family':<10} {'train':>6} {'val':>5} {'test':>5} {'corpus':>7}")
    for family in FAMILIES:
        counts = [sum(r["family"] == family for r in records[s]) for s in ("train", "val", "test")]
        in_corpus = CORPUS_PER_FAMILY if family in OLD_FAMILIES else 0
        print(f"{family:<10} {counts[0]:>6} {counts[1]:>5} {counts[2]:>5} {in_corpus:>7}")
    print(f"{'total':<10} {len(records['train']):>6} {len(records['val']):>5} {len(records['test']):>5} "
          f"{CORPUS_PER_FAMILY * len(OLD_FAMILIES):>7}")
    print(f"corpus.txt: {len(corpus.encode('utf-8'))} bytes, {len(paragraphs)} paragraphs "
          f"({CORPUS_SENTENCE_PARAGRAPHS} of plain sentences)")


if __name__ == "__main__":
    main()
