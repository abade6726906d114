"""What hit ratio `make soak`'s mix allows, by rate: the soak's request stream (bench/soak.py: the same
mix, Zipf popularity, roll saves and seed) run against a model of the response cache instead of the
stack. A read hits when its entry was stored within its TTL and no write changed what it depends on
since (app/core/caching.py's versions): a student's term attendance changes with that student's mark,
rosters, records and balances do not change under the mix. No request is lost and none is slow, so this
is the ratio a box fast enough for the rate would measure.

    python bench/cache_model.py [RATE ...]     # default: 100 150 200, 60 minutes each
"""

import bisect
import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.soak import pick_kind  # noqa: E402

CLASSES, CLASS_SIZE, LONG = 200, 40, 3600  # the soak's 200 classes of 40; every read keeps LONG


def model(rate, minutes=60):
    rosters = {c: [c * CLASS_SIZE + i for i in range(CLASS_SIZE)] for c in range(CLASSES)}
    pupils = [s for c in range(CLASSES) for s in rosters[c]]
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(len(pupils))))
    rng = random.Random(16)
    stored: dict = {}  # key -> (expires at, version when stored)
    version: dict = {}  # student -> how often their attendance changed
    taken: set = set()
    counts: dict = {}  # endpoint -> [hits, misses]

    def popular():
        return pupils[bisect.bisect(cum, rng.random() * cum[-1]) % len(pupils)]

    def read(endpoint, key, now, ver=0):
        entry, tally = stored.get(key), counts.setdefault(endpoint, [0, 0])
        if entry and entry[0] > now and entry[1] == ver:
            tally[0] += 1
        else:
            tally[1] += 1
            stored[key] = (now + LONG, ver)

    for n in range(int(rate * minutes * 60)):
        now, kind = n / rate, pick_kind(rng)
        if kind == "read":
            y = rng.random()
            if y < 0.4:
                s = popular()
                read("student_history", ("h", s), now, version.get(s, 0))
            elif y < 0.7:
                c = rng.choice(range(CLASSES))
                read("class_roster", ("r", c), now)
            elif y < 0.9:
                read("students", ("s", popular()), now)
            else:
                read("student_balance", ("b", popular()), now)
        elif kind == "roll":
            c = rng.choice(range(CLASSES))
            changed = rosters[c] if c not in taken else [rng.choice(rosters[c])]
            taken.add(c)
            for s in changed:
                version[s] = version.get(s, 0) + 1
    hits = sum(h for h, _ in counts.values())
    looked = sum(h + m for h, m in counts.values())
    per = ", ".join(f"{k} {h / (h + m):.3f}" for k, (h, m) in sorted(counts.items()))
    print(f"{rate:g}/s for {minutes} min: overall {hits / looked:.4f} ({per})")


if __name__ == "__main__":
    for r in sys.argv[1:] or ("100", "150", "200"):
        model(float(r))
