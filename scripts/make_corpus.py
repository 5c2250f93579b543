"""Make an English speech corpus with espeak-ng: generated sentences, many voices, three splits.

    python scripts/make_corpus.py --output /work/corpus --seed 0 --jobs 2

Sentences come from templates filled from word lists written here (names, places, nouns,
adjectives, verbs in their forms, spelled-out numbers, years, dates, times, prices), so held-out
sentences put known words in new combinations. Each utterance is spoken by one espeak-ng accent
(en-us, en-gb and regional ones) with one voice variant (male m1..m8, female f1..f5 and named
variants), at a random rate (-s), pitch (-p) and word gap (-g), then resampled from espeak-ng's
22,050 Hz to 16 kHz mono with soxr (``wav2vec2.audio.resample``) and written as 16-bit FLAC.

Splits (no sentence is in two of them):
  train.jsonl  training sentences, voices from the training voice combinations
  eval.jsonl   held-out sentences, training voice combinations (model selection)
  test.jsonl   other held-out sentences, spoken only by held-out accent+variant combinations
               (every accent and every variant is still heard in training, never together)

Each manifest line is ``{"audio": "audio/train/000123.flac", "text": "...", "voice": ..., "rate": ...,
"pitch": ..., "seconds": ...}``; paths are relative to the manifest. The text keeps its case and
punctuation; ``wav2vec2.training.vocabulary.normalize_text`` makes the CTC labels of it.
Everything is drawn up front from ``--seed``: the same seed gives the same corpus whatever
``--jobs`` is. README.md in the output directory says what was made and how long it took.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SAMPLING_RATE = 16000

# ------------------------------------------------------------------------------------ voices
ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
# Variants that change the voice (formants, pitch range, breathiness) but stay intelligible: no
# whisper, croak, robot or "klatt" synthesiser variants.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Andy", "Annie", "david", "linda", "max", "Michael", "paul", "steph", "travis", "victor", "grandma",
    "grandpa", "edward", "john", "norbert", "shelby", "quincy", "Alex", "adam", "Alicia", "Andrea",
    "belinda", "benjamin", "caleb", "Denis", "Hugo", "Lee", "Mike", "rob", "robert", "aunty",
)
RATES = (130, 200)  # words per minute (espeak-ng's default is 175)
PITCHES = (25, 75)  # 0..99 (default 50)
WORD_GAPS = (0, 3)  # extra pause between words, in units of 10 ms

# ------------------------------------------------------------------------------------ words
FIRST_NAMES = """
James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan
Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Margaret Paul
Sandra Steven Ashley Andrew Kimberly Joshua Emily Kevin Donna Brian Michelle George Carol Edward Amanda
Ronald Melissa Timothy Deborah Jason Stephanie Jeffrey Rebecca Ryan Laura Jacob Helen Gary Sharon
Nicholas Cynthia Eric Kathleen Jonathan Amy Larry Shirley Justin Angela Scott Anna Brandon Ruth
Benjamin Brenda Samuel Pamela Frank Nicole Gregory Katherine Raymond Samantha Alexander Christine
Patrick Emma Jack Catherine Dennis Virginia Jerry Rachel Tyler Carolyn Aaron Janet Henry Maria Douglas
Heather Peter Diane Adam Julie Nathan Joyce Zachary Victoria Walter Kelly Kyle Christina Harold Lauren
Carl Joan Arthur Evelyn Gerald Olivia Roger Judith Keith Megan Jeremy Cheryl Terry Martha Lawrence
Andrea Sean Frances Christian Hannah Albert Jacqueline Joe Ann Ethan Gloria Austin Jean Jesse Kathryn
Willie Alice Billy Teresa Bryan Sara Bruce Janice Noah Doris Jordan Madison Dylan Julia Ralph Grace
Roy Judy Alan Abigail Wayne Marie Eugene Denise Juan Beverly Gabriel Amber Louis Theresa Russell
Marilyn Randy Danielle Vincent Diana Philip Brittany Logan Natalie Bobby Sophia Harry Rose Johnny
Isabella Oliver Amelia Liam Chloe Lucas Zoe Leo Ivy Oscar Hazel Felix Clara Hugo Ruby Max Stella
Priya Ravi Aisha Omar Mei Chen Hiroshi Yuki Fatima Ahmed Lars Ingrid Mateo Lucia Diego Elena Sven
Nadia Tariq Leila Kofi Amara Sipho Thandi Rohan Anil Sunita Kenji Akira Sakura Dmitri Olga Ivan
""".split()
SURNAMES = """
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez
Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark
Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams
Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker
Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper
Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James
Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster
Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Fisher Vasquez
Simmons Graham Murray Ford Hamilton Fraser MacDonald Campbell Stewart Robertson Thomson Anderson
Okafor Mensah Kowalski Novak Schmidt Muller Rossi Ferrari Silva Santos Tanaka Suzuki Sato Ivanov
""".split()
PLACES = """
London Paris Berlin Madrid Rome Lisbon Dublin Edinburgh Glasgow Cardiff Belfast Manchester Liverpool
Leeds Bristol Oxford Cambridge York Boston Chicago Denver Seattle Portland Austin Dallas Houston
Phoenix Atlanta Miami Detroit Toronto Montreal Vancouver Sydney Melbourne Auckland Wellington Tokyo
Osaka Seoul Beijing Shanghai Mumbai Delhi Cairo Nairobi Lagos Accra Johannesburg Kingston Havana
Lima Bogota Santiago Oslo Stockholm Helsinki Copenhagen Amsterdam Brussels Vienna Prague Warsaw
Budapest Athens Istanbul Moscow Chester Bath Brighton Norwich Aberdeen Dundee Inverness Swansea
Texas Ohio Oregon Nevada Kansas Florida Jamaica Trinidad Barbados Scotland Wales Ireland England
Canada Mexico Brazil Chile Peru Spain France Italy Germany Norway Sweden Finland Japan China India
Kenya Ghana Egypt Morocco Iceland Greece Portugal Poland Austria Denmark Holland Australia
""".split()
# (singular, plural)
NOUNS = [tuple(pair.split("/")) if "/" in pair else (pair, pair + "s") for pair in """
apple banana orange lemon peach/peaches pear plum grape cherry/cherries melon carrot potato/potatoes
tomato/tomatoes onion pepper cabbage lettuce bean pea sandwich/sandwiches cake cookie biscuit pie
loaf/loaves bottle cup mug glass/glasses plate bowl spoon fork knife/knives kettle pan pot jar box/boxes
basket bag suitcase wallet purse key lock door window wall floor ceiling roof chair table desk sofa
bed lamp clock mirror carpet curtain shelf/shelves drawer cupboard oven fridge sink towel blanket
pillow candle book letter newspaper magazine map ticket envelope stamp pen pencil notebook folder
computer keyboard screen phone camera radio television guitar piano violin drum trumpet flute song
picture painting photograph poster card gift present toy ball kite puzzle game doll robot bicycle car
truck bus/buses train tram boat ship plane helicopter engine wheel tyre road street bridge tunnel
river lake sea ocean beach island mountain hill valley forest tree flower garden field farm barn
fence gate path park station airport harbour market shop bakery library museum theatre cinema
school college office factory hospital hotel restaurant cafe kitchen bathroom bedroom garage cellar
attic village town city/cities country/countries castle tower church/churches house/houses cottage
dog cat horse cow sheep/sheep pig goat chicken duck goose/geese rabbit mouse/mice fox/foxes wolf/wolves
bear deer/deer lion tiger elephant monkey zebra giraffe owl eagle parrot swan frog snake turtle fish/fish
whale dolphin shark bee butterfly/butterflies spider ant coat jacket shirt sweater dress/dresses skirt
hat scarf glove boot shoe sock umbrella ring necklace watch/watches button pocket teacher doctor
nurse farmer baker driver pilot sailor soldier painter singer dancer writer lawyer engineer
scientist student child/children friend neighbour brother sister cousin uncle aunt grandmother
grandfather visitor stranger guest captain manager chef gardener builder plumber postman/postmen
storm cloud rain snow wind thunder sun moon star planet rock stone sand shell feather leaf/leaves
branch/branches seed egg cheese bread butter honey jam soup salad rice pasta coffee tea juice milk
water wine candle question answer idea story/stories dream plan problem secret message report
meeting party concert holiday journey adventure lesson exam festival wedding birthday picnic race
""".split()]
ADJECTIVES = """
red blue green yellow purple orange brown black white grey pink golden silver big small large tiny
huge little tall short long wide narrow heavy light old new young ancient modern fresh stale hot
cold warm cool wet dry soft hard smooth rough clean dirty empty full quiet loud bright dark happy
sad angry calm brave shy clever kind gentle friendly lazy busy rich poor cheap expensive famous
strange funny serious careful careless quick slow early late noisy sleepy hungry thirsty tired
lucky wooden plastic metal paper broken shiny dusty rusty sweet sour bitter salty spicy delicious
beautiful ugly pretty handsome simple difficult easy important useful useless strong weak healthy
sick polite rude honest proud nervous excited curious patient gentle tidy messy crowded lonely
""".split()
# (base, third person, past, -ing)
VERBS = [tuple(v.split("/")) for v in """
carry/carries/carried/carrying open/opens/opened/opening close/closes/closed/closing
paint/paints/painted/painting clean/cleans/cleaned/cleaning wash/washes/washed/washing
find/finds/found/finding buy/buys/bought/buying sell/sells/sold/selling bring/brings/brought/bringing
take/takes/took/taking make/makes/made/making see/sees/saw/seeing watch/watches/watched/watching
drop/drops/dropped/dropping pick/picks/picked/picking move/moves/moved/moving push/pushes/pushed/pushing
pull/pulls/pulled/pulling lift/lifts/lifted/lifting fix/fixes/fixed/fixing build/builds/built/building
break/breaks/broke/breaking lose/loses/lost/losing hide/hides/hid/hiding keep/keeps/kept/keeping
send/sends/sent/sending borrow/borrows/borrowed/borrowing lend/lends/lent/lending order/orders/ordered/ordering
cook/cooks/cooked/cooking eat/eats/ate/eating drink/drinks/drank/drinking fill/fills/filled/filling
empty/empties/emptied/emptying count/counts/counted/counting check/checks/checked/checking
draw/draws/drew/drawing write/writes/wrote/writing read/reads/read/reading hold/holds/held/holding
throw/throws/threw/throwing catch/catches/caught/catching follow/follows/followed/following
visit/visits/visited/visiting remember/remembers/remembered/remembering forget/forgets/forgot/forgetting
choose/chooses/chose/choosing want/wants/wanted/wanting need/needs/needed/needing like/likes/liked/liking
love/loves/loved/loving hate/hates/hated/hating share/shares/shared/sharing cover/covers/covered/covering
""".split()]
INTRANSITIVE = [tuple(v.split("/")) for v in """
walk/walks/walked/walking run/runs/ran/running swim/swims/swam/swimming drive/drives/drove/driving
travel/travels/travelled/travelling fly/flies/flew/flying sing/sings/sang/singing dance/dances/danced/dancing
laugh/laughs/laughed/laughing smile/smiles/smiled/smiling sleep/sleeps/slept/sleeping wait/waits/waited/waiting
work/works/worked/working study/studies/studied/studying shout/shouts/shouted/shouting
arrive/arrives/arrived/arriving leave/leaves/left/leaving cycle/cycles/cycled/cycling
climb/climbs/climbed/climbing sit/sits/sat/sitting stand/stands/stood/standing listen/listens/listened/listening
""".split()]
ADVERBS = """
quickly slowly quietly loudly carefully happily sadly suddenly finally already always never often
sometimes rarely usually gently easily badly proudly politely nervously calmly eagerly silently
""".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()
RELATIONS = "mother father brother sister uncle aunt cousin grandmother grandfather neighbour friend boss".split()
PLACE_PHRASES = """
in_the_kitchen in_the_garden at_the_station on_the_bus near_the_river behind_the_house under_the_bridge
at_the_market in_the_library on_the_beach in_the_car at_the_office by_the_window on_the_table
under_the_bed next_to_the_door in_the_park at_school at_home at_work in_town
""".split()
TIME_PHRASES = """
yesterday today tomorrow this_morning this_afternoon this_evening last_night last_week next_week
last_month next_month on_the_weekend every_day every_morning after_lunch before_dinner at_midnight
at_noon in_the_morning in_the_evening
""".split()
STREETS = "Oak Elm Maple Pine Cedar Church High Station Mill Park Bridge Market Water Queen King Hill".split()

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
    "twelve": "twelfth",
}


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in words: 'three hundred and forty two'."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in ORDINAL_WORDS:
        words[-1] = ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_words(year: int) -> str:
    """1905 -> 'nineteen oh five', 2000 -> 'two thousand', 2014 -> 'twenty fourteen'."""
    if year == 2000 or (2001 <= year <= 2009):
        return number_words(year)
    high, low = divmod(year, 100)
    if low == 0:
        return number_words(high) + " hundred"
    return number_words(high) + " " + ("oh " + ONES[low] if low < 10 else number_words(low))


def clock_words(rng: np.random.Generator) -> str:
    hour = int(rng.integers(1, 13))
    kind = rng.integers(5)
    if kind == 0:
        return f"{number_words(hour)} o'clock"
    if kind == 1:
        return f"half past {number_words(hour)}"
    if kind == 2:
        return f"quarter to {number_words(hour)}"
    minute = int(rng.choice([5, 10, 15, 20, 25, 35, 40, 45, 50, 55]))
    if kind == 3:
        return f"{number_words(hour)} {number_words(minute)}"
    return f"{number_words(minute if minute <= 30 else 60 - minute)} {'past' if minute <= 30 else 'to'} {number_words(hour)}"


def price_words(rng: np.random.Generator) -> str:
    units = rng.choice(["dollar", "pound", "euro"])
    whole = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 19, 20, 25, 30, 45, 50, 99, 100, 250]))
    name = units if whole == 1 else units + "s"
    if rng.random() < 0.5:
        return f"{number_words(whole)} {name}"
    cents = int(rng.choice([5, 10, 20, 25, 40, 50, 75, 95, 99]))
    small = "cents" if units != "pound" else "pence"
    return f"{number_words(whole)} {name} and {number_words(cents)} {small}"


def count_words(rng: np.random.Generator) -> tuple:
    """(words, n) for a count of things; small numbers more often than large ones."""
    n = int(rng.choice([rng.integers(2, 13), rng.integers(13, 100), rng.integers(100, 1000)], p=[0.6, 0.3, 0.1]))
    return number_words(n), n


# ------------------------------------------------------------------------------------ templates
class Filler:
    """Draws slot values; every template is a function of one of these."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def name(self):
        return self.pick(FIRST_NAMES)

    def full_name(self):
        return f"{self.pick(FIRST_NAMES)} {self.pick(SURNAMES)}"

    def place(self):
        return self.pick(PLACES)

    def noun(self):
        return self.pick(NOUNS)[0]

    def nouns(self):
        return self.pick(NOUNS)[1]

    def adj(self):
        return self.pick(ADJECTIVES)

    def adv(self):
        return self.pick(ADVERBS)

    def verb(self, form):
        return self.pick(VERBS)[form]

    def intransitive(self, form):
        return self.pick(INTRANSITIVE)[form]

    def where(self):
        return self.pick(PLACE_PHRASES).replace("_", " ")

    def when(self):
        return self.pick(TIME_PHRASES).replace("_", " ")

    def counted(self):
        words, n = count_words(self.rng)
        singular, plural = self.pick(NOUNS)
        return f"{words} {plural if n != 1 else singular}"

    def date(self):
        return f"the {ordinal_words(int(self.rng.integers(1, 32)))} of {self.pick(MONTHS)}"

    def article(self, word):
        vowel_sound = (word[0] in "aeiou" and not word.startswith("use")) or word.startswith("hon")
        return ("an " if vowel_sound else "a ") + word


TEMPLATES = [
    lambda f: f"{f.name()} {f.verb(2)} {f.counted()} {f.where()}.",
    lambda f: f"{f.name()} {f.verb(2)} the {f.adj()} {f.noun()} {f.when()}.",
    lambda f: f"Did {f.name()} {f.verb(0)} the {f.noun()} {f.when()}?",
    lambda f: f"The {f.adj()} {f.noun()} is {f.adv()} {f.adj()} today.",
    lambda f: f"On {f.pick(DAYS)} {f.date()}, {f.name()} flew to {f.place()}.",
    lambda f: f"{f.full_name()} was born in {f.place()} in {year_words(int(f.rng.integers(1905, 2025)))}.",
    lambda f: f"Please call {f.full_name()} at {clock_words(f.rng)}.",
    lambda f: f"The {f.noun()} costs {price_words(f.rng)}.",
    lambda f: f"We need {f.counted()} and {f.counted()} for the {f.pick(['party', 'picnic', 'wedding', 'concert', 'festival', 'meeting'])}.",
    lambda f: f"My {f.pick(RELATIONS)} lives at number {number_words(int(f.rng.integers(1, 400)))} {f.pick(STREETS)} Street.",
    lambda f: f"There are {f.counted()} in the {f.noun()}.",
    lambda f: f"Why didn't {f.name()} bring the {f.adj()} {f.noun()}?",
    lambda f: f"I think the {f.noun()} {f.verb(2)} the {f.noun()}.",
    lambda f: f"{f.name()} and {f.name()} {f.intransitive(2)} {f.adv()} to the {f.noun()}.",
    lambda f: f"The train to {f.place()} leaves at {clock_words(f.rng)}.",
    lambda f: f"Room {number_words(int(f.rng.integers(1, 999)))} is on the {ordinal_words(int(f.rng.integers(1, 21)))} floor.",
    lambda f: f"{f.name()} always {f.verb(1)} {f.article(f.adj())} {f.noun()} {f.where()}.",
    lambda f: f"Is the {f.noun()} {f.where()} {f.adj()} or {f.adj()}?",
    lambda f: f"She was {f.verb(3)} the {f.nouns()} when the {f.noun()} {f.intransitive(2)}.",
    lambda f: f"He is {f.intransitive(3)} {f.where()} with his {f.pick(RELATIONS)}.",
    lambda f: f"They {f.adv()} {f.verb(2)} {f.counted()}.",
    lambda f: f"{f.name()} said the {f.nouns()} in {f.place()} are very {f.adj()}.",
    lambda f: f"Can you {f.verb(0)} {f.article(f.adj())} {f.noun()} for {f.name()}?",
    lambda f: f"It's {f.adj()} and {f.adj()} in {f.place()} {f.when()}.",
    lambda f: f"The {f.adj()} {f.nouns()} {f.intransitive(2)} {f.adv()} {f.where()}.",
    lambda f: f"{f.full_name()} won the race in {number_words(int(f.rng.integers(10, 60)))} seconds.",
    lambda f: f"I'll meet {f.name()} at {clock_words(f.rng)} on {f.pick(DAYS)}.",
    lambda f: f"Don't {f.verb(0)} the {f.noun()} before {f.name()} arrives.",
    lambda f: f"The {f.noun()} and the {f.noun()} were {f.adj()}.",
    lambda f: f"{f.name()}'s {f.adj()} {f.noun()} is {f.where()}.",
    lambda f: f"In {year_words(int(f.rng.integers(1905, 2025)))} the {f.noun()} moved to {f.place()}.",
    lambda f: f"Our {f.pick(RELATIONS)} {f.verb(2)} {f.counted()} from {f.place()}.",
    lambda f: f"The {f.adj()} {f.noun()} {f.verb(1)} the {f.nouns()} every {f.pick(DAYS)}.",
    lambda f: f"Nobody knew why the {f.noun()} was so {f.adj()}.",
    lambda f: f"{f.name()} {f.intransitive(2)} from {f.place()} to {f.place()} {f.when()}.",
    lambda f: f"The score was {number_words(int(f.rng.integers(0, 10)))} to {number_words(int(f.rng.integers(0, 10)))}.",
    lambda f: f"Take {number_words(int(f.rng.integers(2, 10)))} {f.nouns()} and leave the {f.adj()} ones {f.where()}.",
    lambda f: f"{f.name()} asked {f.name()} to {f.verb(0)} the {f.nouns()} {f.adv()}.",
    lambda f: f"When will the {f.nouns()} from {f.place()} arrive?",
    lambda f: f"The {f.noun()} weighs {number_words(int(f.rng.integers(2, 500)))} kilograms.",
]


def normalized(text: str) -> str:
    """What the corpus compares sentences by: upper case letters, apostrophes and single spaces."""
    return " ".join(re.sub(r"[^A-Z' ]", " ", text.upper()).split())


def generate_sentences(count: int, rng: np.random.Generator) -> list:
    """``count`` distinct sentences (distinct after normalisation), capitalised."""
    filler, seen, sentences = Filler(rng), set(), []
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count:
            raise RuntimeError(f"the templates gave only {len(sentences)} distinct sentences")
        text = TEMPLATES[int(rng.integers(len(TEMPLATES)))](filler)
        text = text[0].upper() + text[1:]
        key = normalized(text)
        if key not in seen:
            seen.add(key)
            sentences.append(text)
    return sentences


# ------------------------------------------------------------------------------------ speaking
def speak(job: dict) -> dict:
    """Run espeak-ng for one utterance, resample to 16 kHz, write FLAC; returns its manifest row."""
    import soundfile

    from wav2vec2.audio import resample, to_mono

    command = [
        "espeak-ng", "-v", job["voice"], "-s", str(job["rate"]), "-p", str(job["pitch"]),
        "-g", str(job["gap"]), "--stdout",
    ]
    result = subprocess.run(command, input=job["text"].encode(), capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"espeak-ng failed for {job['voice']}: {result.stderr.decode(errors='replace')}")
    waveform, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    waveform = resample(to_mono(waveform), rate, SAMPLING_RATE)
    path = os.path.join(job["root"], job["audio"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Written beside its final name and renamed, so an interrupted run leaves no truncated file.
    tmp = path + ".tmp"
    soundfile.write(tmp, np.clip(waveform, -1.0, 1.0), SAMPLING_RATE, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)
    row = {k: job[k] for k in ("audio", "text", "voice", "rate", "pitch")}
    row["seconds"] = round(len(waveform) / SAMPLING_RATE, 3)
    return row


def split_voices(rng: np.random.Generator, held_out_fraction: float):
    """(training combinations, held-out combinations) of accent+variant.

    Every accent and every variant keeps at least one training combination.
    """
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    order = rng.permutation(len(combos))
    wanted = int(round(held_out_fraction * len(combos)))
    held = [combos[i] for i in order[:wanted]]
    train = [combos[i] for i in order[wanted:]]
    # Give back any accent or variant that lost all its training combinations.
    for accent in ACCENTS:
        if not any(a == accent for a, _ in train):
            train.append(next(c for c in held if c[0] == accent))
            held.remove(train[-1])
    for variant in VARIANTS:
        if not any(v == variant for _, v in train):
            train.append(next(c for c in held if c[1] == variant))
            held.remove(train[-1])
    return sorted(train), sorted(held)


def plan(args) -> dict:
    """Every utterance of every split, drawn from the seed: {split: [job]}."""
    rng = np.random.default_rng(args.seed)
    total = args.train_sentences + args.eval_sentences + args.test_sentences
    sentences = generate_sentences(total, rng)
    test = sentences[: args.test_sentences]
    eval_ = sentences[args.test_sentences : args.test_sentences + args.eval_sentences]
    train = sentences[args.test_sentences + args.eval_sentences :]
    train_voices, held_voices = split_voices(rng, args.held_out_voices)

    def jobs(split, texts, voices, per_sentence):
        out = []
        for text in texts:
            for _ in range(per_sentence):
                accent, variant = voices[int(rng.integers(len(voices)))]
                out.append(dict(
                    root=args.output, audio=f"audio/{split}/{len(out):06d}.flac", text=text,
                    voice=f"{accent}+{variant}", rate=int(rng.integers(RATES[0], RATES[1] + 1)),
                    pitch=int(rng.integers(PITCHES[0], PITCHES[1] + 1)),
                    gap=int(rng.integers(WORD_GAPS[0], WORD_GAPS[1] + 1)),
                ))
        return out

    return {
        "train": jobs("train", train, train_voices, args.voices_per_sentence),
        "eval": jobs("eval", eval_, train_voices, 1),
        "test": jobs("test", test, held_voices, 1),
    }, train_voices, held_voices


def write_jsonl(rows, path):
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False, encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(f.name, path)


def vocabulary(rows) -> Counter:
    return Counter(word for row in rows for word in normalized(row["text"]).split())


def readme(args, manifests, train_voices, held_voices, seconds_taken) -> str:
    words = {split: vocabulary(rows) for split, rows in manifests.items()}
    all_words = set().union(*words.values())
    lines = [
        "# espeak-ng speech corpus",
        "",
        f"Made by `scripts/make_corpus.py --seed {args.seed} --train-sentences {args.train_sentences} "
        f"--eval-sentences {args.eval_sentences} --test-sentences {args.test_sentences} "
        f"--voices-per-sentence {args.voices_per_sentence} --held-out-voices {args.held_out_voices}` "
        f"with {subprocess.run(['espeak-ng', '--version'], capture_output=True, text=True).stdout.split(' Data')[0].strip()}, "
        f"in {seconds_taken / 60:.1f} minutes with --jobs {args.jobs}.",
        "",
        "16 kHz mono 16-bit FLAC; manifests `train.jsonl`, `eval.jsonl`, `test.jsonl` (paths relative to them).",
        "",
        "| split | utterances | sentences | hours | words (types) | word types not in train |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for split, rows in manifests.items():
        hours = sum(r["seconds"] for r in rows) / 3600
        new = len(set(words[split]) - set(words["train"])) if split != "train" else 0
        lines.append(
            f"| {split} | {len(rows)} | {len({r['text'] for r in rows})} | {hours:.2f} | "
            f"{sum(words[split].values())} ({len(words[split])}) | {new} |"
        )
    size = sum(os.path.getsize(os.path.join(args.output, r["audio"])) for rows in manifests.values() for r in rows)
    lines += [
        "",
        f"Vocabulary: {len(all_words)} distinct words over all splits; audio {size / 2**20:.0f} MiB.",
        "eval and test sentences never occur in train (compared after upper-casing and removing punctuation).",
        "",
        f"Voices: {len(ACCENTS)} accents ({', '.join(ACCENTS)}) x {len(VARIANTS)} variants; "
        f"{len(train_voices)} accent+variant combinations for train and eval, {len(held_voices)} held out for test: "
        + ", ".join(f"{a}+{v}" for a, v in held_voices) + ".",
        f"Rates {RATES[0]}-{RATES[1]} words/minute, pitch {PITCHES[0]}-{PITCHES[1]}, word gap "
        f"{WORD_GAPS[0]}-{WORD_GAPS[1]}0 ms, uniform per utterance.",
        "",
    ]
    return "\n".join(lines)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="directory to write (audio/, *.jsonl, README.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-sentences", type=int, default=6000)
    parser.add_argument("--eval-sentences", type=int, default=300)
    parser.add_argument("--test-sentences", type=int, default=300)
    parser.add_argument("--voices-per-sentence", type=int, default=2, help="training utterances per training sentence")
    parser.add_argument("--held-out-voices", type=float, default=0.15, help="fraction of accent+variant pairs kept for test")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    args.output = os.path.abspath(args.output)
    return args


def main(argv=None):
    args = parse_arguments(argv)
    os.makedirs(args.output, exist_ok=True)

    start = time.time()
    jobs, train_voices, held_voices = plan(args)
    manifests = {}
    with multiprocessing.Pool(args.jobs) as pool:
        for split, split_jobs in jobs.items():
            # imap keeps the order of the plan, so the manifest does not depend on --jobs.
            manifests[split] = list(pool.imap(speak, split_jobs, chunksize=16))
            print(f"{split}: {len(split_jobs)} utterances, {time.time() - start:.0f} s", flush=True)
    for split, rows in manifests.items():
        write_jsonl(rows, os.path.join(args.output, f"{split}.jsonl"))
    text = readme(args, manifests, train_voices, held_voices, time.time() - start)
    with open(os.path.join(args.output, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
