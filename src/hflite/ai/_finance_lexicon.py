"""Finance rules for headline sentiment: the sign of a change depends on what changes.

"Loss narrowed" and "costs fell" are good news, "sales rose" is good news, "margin narrowed" is bad
news. Each quantity has a polarity (good or bad when it goes up) and each direction word a sign; a
rule's sign is polarity x direction, for a quantity and a direction a few tokens apart in either
order. Event terms ("beats estimates", "downgrade", "bankruptcy") and negation ("did not", "fails
to") come on top, and words no rule used fall back to a dictionary's polarity (the caller's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

WINDOW = 3  # at most this many content tokens from a quantity to its direction word
ADJECTIVE_WINDOW = 2  # adjectives sit next to their noun ("strong demand", "loss was narrower")
NEGATION_REACH = 3  # a negator reaches this many content tokens forward
PAIR_WEIGHT = 1.0
WORD_WEIGHT = 0.6  # a dictionary word that no rule used


class Direction(NamedTuple):
    """A direction-of-change word: sign (+1 up, -1 down, 0 flat) and where its quantity may sit."""

    sign: int
    side: str  # "after": the quantity comes first ("profit rose"); "before": it follows ("cuts costs")
    alone: float  # weight when no quantity is near ("Tesla surges"): the subject is then a price
    adjective: bool  # binds first to the quantity right after it ("narrower loss")
    evaluative: bool  # good or bad whatever the quantity ("margins improved", "loss improved")
    reach: int = WINDOW  # how far its quantity may be


class Event(NamedTuple):
    """A term with a sign of its own ("beats", "bankruptcy"); some need an expectation noun after."""

    weight: float
    needs_expectation: bool


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _directions(
    words: str,
    sign: int,
    side: str,
    alone: float = 0.0,
    adjective: bool = False,
    evaluative: bool = False,
    reach: int = WINDOW,
) -> dict[str, Direction]:
    entry = Direction(sign, side, alone, adjective, evaluative, reach)
    return dict.fromkeys(_words(words), entry)


def _events(words: str, weight: float, needs_expectation: bool = False) -> dict[str, Event]:
    return dict.fromkeys(_words(words), Event(weight, needs_expectation))


# Quantities: +1 good when up, -1 bad when up. Multi-word ones are merged by PHRASES first.
QUANTITIES: dict[str, int] = {
    **dict.fromkeys(
        _words(
            "profit, profits, earnings, income, net income, revenue, revenues, sales, turnover, margin, "
            "margins, guidance, outlook, forecast, forecasts, estimate, estimates, expectations, rating, "
            "ratings, price target, target, targets, dividend, dividends, payout, buyback, buybacks, "
            "repurchase, repurchases, eps, ebitda, ebit, growth, shares, stock, stocks, stock price, "
            "share price, equities, index, indexes, indices, market, markets, wall street, dow, s&p, "
            "nasdaq, ftse, dax, nikkei, futures, demand, orders, bookings, backlog, market share, "
            "cash flow, liquidity, savings, output, production, shipments, deliveries, volumes, "
            "subscribers, users, traffic, productivity, confidence, sentiment, consumer spending, jobs, "
            "payrolls, hiring, employment, gdp, economy, exports, recovery, valuation, assets, deposits, "
            "profitability, returns, results, bitcoin, housing starts, inflow, inflows, hopes, factory, "
            "factories, plant, plants"
        ),
        1,
    ),
    **dict.fromkeys(
        _words(
            "loss, losses, net loss, costs, cost, expenses, expense, debt, debts, bad debts, borrowing, "
            "leverage, deficit, deficits, inflation, unemployment, jobless claims, layoffs, job cuts, "
            "charges, writedowns, impairments, provisions, bad loans, delinquencies, defaults, arrears, "
            "bankruptcies, foreclosures, volatility, vix, yields, rates, risk, risks, fears, worries, "
            "concerns, uncertainty, pressure, headwinds, churn, cash burn, outflows, "
            "outflow, redemptions, tariffs, fines, penalties, short interest"
        ),
        -1,
    ),
}

# Quantities that are news by themselves when no direction word is near ("announces layoffs").
BARE_QUANTITIES: dict[str, float] = {
    "buyback": 0.7,
    "buybacks": 0.7,
    "repurchase": 0.7,
    "layoffs": -1.0,
    "job cuts": -1.0,
    "writedowns": -0.7,
    "bankruptcies": -0.7,
}

_UP_AFTER = (
    "rose, jumped, surged, soared, climbed, grew, gained, advanced, rallied, rebounded, recovered, spiked, "
    "skyrocketed, rocketed, ballooned, swelled, mounted, accelerated, strengthened, widened, tripled, "
    "picked up, bounced, bounced back, bounces back, rebounds, soars, surges, jumps, climbs, rallies"
)
_UP_BOTH = (
    "rise, rises, rising, risen, jump, surge, soar, climb, grow, grows, growing, gain, gains, advance, "
    "advances, rally, rebound, spike, spikes, increase, increases, increased, increasing, raised, hike, "
    "hikes, hiked, boosted, lifted, doubled, double, doubles, expand, expands, expanded, expanding, widen, "
    "widens, widening, accelerate, accelerates, accelerating, mount, mounts, mounting, swell, swells, "
    "balloon, balloons, skyrocket, skyrockets, recover, recovers, bounce, bounces, upturn"
)
_UP_BEFORE = (
    "raises, raise, raising, lifts, lift, lifting, boosts, boost, boosting, adds, drives, fuels, ramps up, "
    "ramp up"
)
_UP_ADJECTIVE = (
    "higher, high, highs, highest, record, record high, record highs, all time high, new high, strong, "
    "stronger, strongest, robust, solid, bigger, larger, wider, heavy, heavier, surging, "
    "soaring, rising, growing, increased, elevated"
)
_DOWN_AFTER = (
    "fell, dropped, slumped, plunged, declined, shrank, shrunk, narrowed, eased, cooled, slowed, stalled, "
    "tumbled, sank, slid, slipped, dipped, retreated, contracted, halved, tanked, cratered, collapsed, "
    "crashed, weakened, softened, moderated, evaporated, plummeted, dwindled, decreased, dried up, "
    "shed, lost, fell short, faded, fades, sagged, sags, faltered, falters, stumbled, stumbles, wobbles, "
    "wobbled, soured, sours, slumps, plunges, tumbles, slides, slips, dips, retreats, crashes, "
    "tanks, plummets, collapses, drops, falls, declines"
)
_DOWN_BOTH = (
    "fall, falling, drop, dropping, slump, plunge, plunging, decline, declining, shrink, shrinks, sinks, "
    "shrinking, narrows, narrowing, ease, eases, easing, cool, cools, cooling, slow, slows, slowing, "
    "slowdown, stall, stalls, tumble, sink, sinking, slide, sliding, slip, dip, retreat, contraction, "
    "halve, halves, tank, collapse, plummet, crash, cut, cuts, cutting, lowered, reduced, reduction, "
    "reductions, trimmed, slashed, chopped, decrease, decreases, suspended, halted, withdrawn, scrapped, "
    "eliminated, weakening, weakens, softening, dwindle, dwindles, fade, fading, downturn, wobble, "
    "stumble, falter, sag, sour, dim, dims, dimmed, dimming"
)
_DOWN_BEFORE = (
    "lowers, reduces, reduce, reducing, trims, trim, slashes, slash, sheds, halts, halt, suspends, "
    "suspend, scraps, withdraws, pulls, eliminates, hits, hurts, hurt, dents, dent, squeezes, squeeze, "
    "weighs on, weigh on, pressures, erodes, erode, eroded, drags, drag on, wipes out, chop, chops, axes, "
    "axe"
)
_DOWN_ADJECTIVE = (
    "lower, low, lows, lowest, record low, record lows, all time low, new low, narrow, narrower, "
    "narrowest, weak, weaker, weakest, soft, softer, smaller, small, slower, slowing, falling, declining, "
    "shrinking, reduced, sluggish, tepid, muted, thin, thinner"
)
# Reporting verbs that are news about a price when no quantity is near ("Tesla surges", "Nvidia slips").
_ALONE = (
    "rises, rose, gains, gained, climbs, climbed, jumps, jumped, surges, surged, soars, soared, rallies, "
    "rallied, rebounds, rebounded, spikes, spiked, skyrockets, skyrocketed, rocketed, bounces, bounced, "
    "bounced back, bounces back, record high, record highs, all time high, new high, falls, fell, drops, "
    "dropped, slips, slipped, slides, slid, sinks, sank, tumbles, tumbled, plunges, plunged, slumps, "
    "slumped, declines, declined, dips, dipped, retreats, retreated, crashes, crashed, tanks, tanked, "
    "plummets, plummeted, sags, sagged, stumbles, stumbled, wobbles, wobbled, fades, faded, falters, "
    "faltered, sours, soured, record low, record lows, new low, rally, rallies, crash, slump, plunge, surge, "
    "tumble"
)
_FLAT = (
    "unchanged, little changed, flat, steady, stable, in line, maintains, maintained, maintain, reaffirms, "
    "reaffirmed, reaffirm, reiterates, reiterated, holds, held, keeps, kept, on hold, mixed, hold"
)
_BETTER = "improved, improves, improve, improving, improvement, better, better than expected, strengthen"
_WORSE = "deteriorated, deteriorates, deteriorating, worsened, worsens, worsening, worse, worse than expected"
# A market's move over a session: "Wall Street ends higher", "Europe opens lower".
_SESSION_VERBS = (
    "end, ends, ended, close, closes, closed, open, opens, opened, trade, trades, traded, edge, edges, "
    "edged, inch, inches, inched, drift, drifts, drifted, move, moves, moved, point, points, pointed, "
    "head, heads, headed, finish, finishes, finished, tick, ticks, ticked, turn, turns, turned, start, "
    "starts, started, trend, trends, trended"
)


def _session_moves() -> dict[str, Direction]:
    moves = {}
    for verb in _words(_SESSION_VERBS):
        for word, sign in (("higher", 1), ("up", 1), ("lower", -1), ("down", -1)):
            moves[f"{verb} {word}"] = Direction(sign, "after", 0.7, False, False)
    return moves


def _direction_table() -> dict[str, Direction]:
    table: dict[str, Direction] = {}
    table.update(_directions(_UP_BOTH, 1, "both"))
    table.update(_directions(_UP_AFTER, 1, "after"))
    table.update(_directions(_UP_BEFORE, 1, "before"))
    table.update(_directions(_UP_ADJECTIVE, 1, "both", adjective=True, reach=ADJECTIVE_WINDOW))
    table.update(_directions(_DOWN_BOTH, -1, "both"))
    table.update(_directions(_DOWN_AFTER, -1, "after"))
    table.update(_directions(_DOWN_BEFORE, -1, "before"))
    table.update(_directions(_DOWN_ADJECTIVE, -1, "both", adjective=True, reach=ADJECTIVE_WINDOW))
    table.update(_directions(_FLAT, 0, "both"))
    table.update(_directions(_BETTER, 1, "both", alone=0.7, evaluative=True))
    table.update(_directions(_WORSE, -1, "both", alone=0.7, evaluative=True))
    table.update(_session_moves())
    # "up" and "down" move only the quantity right before them ("shares up 3%", "profit down 20%")
    table["up"] = Direction(1, "after", 0.0, False, False, 1)
    table["down"] = Direction(-1, "after", 0.0, False, False, 1)
    for word in _words(_ALONE):
        table[word] = table[word]._replace(alone=0.7)
    return table


DIRECTIONS: dict[str, Direction] = _direction_table()

EVENTS: dict[str, Event] = {
    **_events(
        "beat, beats, beating, beaten, exceeds, exceeded, exceed, upgrade, upgrades, upgraded, outperform, "
        "outperforms, outperformed, outpaces, outpaced, crushes, crushing, trounces, trounced, overweight, "
        "bullish, bull market, approval, approves, approved, wins, won, win, winning streak, win streak, "
        "breakthrough, upbeat, optimism, swings to profit, swung to profit, returns to profit, "
        "returned to profit, turns profitable, in the black, rate cut, rate cuts, strong buy, buy rating, "
        "succeeds, boom, booming, cheer, cheers, lucrative, cost cutting, best day, best week, best month, "
        "best year, milestone, soft landing, bottomed, bottomed out, bottoms out, breakout, breaks out, "
        "broke out, break out",
        1.0,
    ),
    **_events("top, tops, topped, meet, meets, met", 1.0, needs_expectation=True),
    **_events(
        "miss, misses, missed, falls short, downgrade, downgrades, downgraded, underperform, "
        "underperforms, underperformed, underweight, bearish, bear market, bankruptcy, bankrupt, "
        "chapter 11, insolvency, insolvent, default, defaults on, defaulted, recall, recalls, recalled, "
        "probe, probes, probed, investigation, investigations, investigates, investigating, lawsuit, "
        "lawsuits, suit, suits, class action, sue, sues, sued, fraud, scandal, lay off, lays off, "
        "laid off, selloff, sell off, rout, meltdown, bloodbath, recession, warning, profit warning, "
        "warns, warned, going concern, delist, delisted, delisting, fine, fined, subpoena, subpoenaed, "
        "rejects, rejected, disappoints, disappointed, disappointing, turmoil, data breach, breach, "
        "hacked, cyberattack, outage, glitch, shortfall, swings to loss, swung to loss, slips into loss, "
        "in the red, junk, crisis, panic, rate hike, rate hikes, rate increase, rate increases, "
        "sell rating, fails, failed, accident, fire, disrupts, flee, flees, fleeing, resigns, resigned, "
        "shut down, shuts down, charged with, indicted, emergency, tremble, trembles, jitters, woes, woe, "
        "nightmare, abysmal, dismal, gloom, gloomy, bleak, grim, botched, trouble, troubles, blow, worst, "
        "worst day, worst week, worst month, worst year, correction, bubble, overvalued, death cross, "
        "hard landing, ugly, struggling, struggles, struggled, selling off",
        -1.0,
    ),
}

EXPECTATIONS = frozenset(
    _words(
        "estimates, estimate, expectations, forecasts, forecast, consensus, views, targets, target, "
        "guidance, projections, analysts"
    )
)
NEGATORS = frozenset(
    _words(
        "not, no, never, without, fails to, failed to, fail to, did not, does not, do not, didn't, doesn't, "
        "don't, won't, isn't, wasn't, aren't, weren't, hasn't, haven't, hadn't, can't, cannot, couldn't, "
        "unable to, neither, nor"
    )
)
FILLERS = frozenset(
    _words(
        "#, the, a, an, its, their, his, her, our, in, of, for, to, by, from, at, this, that, its, "
        "first, second, third, fourth, quarter, quarterly, q1, q2, q3, q4, full, year, annual, fiscal, "
        "half, month, monthly, weekly, operating, adjusted, core, gross, underlying, organic, total, "
        "company, group, than, more, much, expected, sharply, slightly, further, again, also, has, have, "
        "had, was, were, is, are, be, been, will, would, could, may, might, per, percent, pct, nearly, "
        "almost, about, around, roughly, some, million, billion, trillion, bn, mln, points, point, bps, "
        "basis, cents, dollars, two, three, four, five, six, ten, over, year on year, year over year, plus, "
        "so far, sequentially, significantly, modestly, rate, its own, just"
    )
)
# Clause boundaries: no rule pairs words across them. A clause opened by a subordinating word
# ("shares fell as costs rose") is context for the main clause and counts for less.
SUBORDINATORS = frozenset(
    _words("as, while, amid, after, despite, though, although, because, whereas, even as, ahead")
)
BARRIERS = SUBORDINATORS | {"|", ",", "but"}
SUBORDINATE_WEIGHT = 0.6
# Phrases whose words must not fire alone ("record date", "steps down", "price war").
NEUTRAL = frozenset(
    _words(
        "record date, track record, on record, steps down, step down, price war, hold rating, "
        "neutral rating, low cost, high yield, top executive, top executives, top official, hits the market, "
        "hit the market, hits stores, hits shelves, measure up, measures up, stack up, stacks up, set up, "
        "sets up, follow suit, fine tune, declines to comment, declined to comment, declines comment, "
        "up to, top pick, top picks"
    )
)

# Words the dictionary fallback skips: grammar words, and stem collisions ("contract" shares the stem
# of "contraction", "content" that of "contention", "effect" that of "effective"; "late" is mostly a
# time of day in market news, "late session rally"). Once a rule has fired, direction words are the
# rules' business too ("delinquencies climbed to highest": "highest" is not good news there).
_NOT_DICTIONARY = (
    FILLERS | BARRIERS | NEGATORS | {"contract", "contracts", "effect", "effects", "content", "late"}
)
_NOT_DICTIONARY_AFTER_RULES = _NOT_DICTIONARY | frozenset(DIRECTIONS)

_ALL_KEYS = (
    set(QUANTITIES) | set(DIRECTIONS) | set(EVENTS) | NEGATORS | FILLERS | BARRIERS | NEUTRAL | EXPECTATIONS
)
_SPELLING = {
    "write downs": "writedowns",
    "write offs": "writedowns",
    "write off": "writedowns",
    "impairment charges": "charges",
    "impairment charge": "charges",
    "restructuring charges": "charges",
    "interest rates": "rates",
    "interest rate": "rates",
    "mortgage rates": "rates",
    "policy rate": "rates",
    "prime rate": "rates",
    "borrowing costs": "costs",
    "net losses": "losses",
    "operating loss": "net loss",
    "loss per share": "net loss",
    "earnings per share": "eps",
    "cash flows": "cash flow",
    "free cash flow": "cash flow",
    "same store sales": "sales",
    "retail sales": "sales",
    "bad loan provisions": "provisions",
    "loan losses": "losses",
    "target price": "price target",
    "price targets": "price target",
    "credit rating": "rating",
    "layoff": "layoffs",
    "job losses": "layoffs",
    "cost cuts": "cost cutting",
    "profit warnings": "profit warning",
    "sell offs": "sell off",
}
# Keys made of several words, longest first, as token tuples (merged before the rules run).
PHRASES: dict[tuple[str, ...], str] = {
    tuple("#" if w[0].isdigit() else w for w in key.split()): _SPELLING.get(key, key)
    for key in sorted(_ALL_KEYS | set(_SPELLING))
    if " " in key
}
MAX_PHRASE = max(len(p) for p in PHRASES)
_PHRASE_STARTS = frozenset(p[0] for p in PHRASES)

_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:[&'][a-z0-9]+)*|\d[\d,.]*%?|[,;:|!?()]|\s[-\u2013\u2014]+\s")


class Token(NamedTuple):
    """A word or merged phrase of the lower-cased text, with its character span."""

    key: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Lower-cased words and merged phrases; numbers become '#', clause punctuation '|'."""
    keys: list[str] = []
    spans: list[tuple[int, int]] = []
    for m in _TOKEN.finditer(text.lower().replace("\u2019", "'")):
        word = m.group()
        key = _WORD_KEYS.get(word)
        if key is None:
            key = _word_key(word)
            if len(_WORD_KEYS) < 200_000:
                _WORD_KEYS[word] = key
        keys.append(key)
        spans.append(m.span())
    return _merge(keys, spans)


_WORD_KEYS: dict[str, str] = {}


def _word_key(word: str) -> str:
    if word[0].isdigit():
        return "#"
    if not word[0].isalpha():
        return "," if word == "," else "|"
    if "'" in word and word not in NEGATORS:
        word = word[: word.index("'")]  # possessive: "rival's" -> "rival"
    return _SPELLING.get(word, word)


def _merge(keys: list[str], spans: list[tuple[int, int]]) -> list[Token]:
    """Tokens with known phrases ("net loss", "little changed") merged into one, longest first."""
    out: list[Token] = []
    i, n = 0, len(keys)
    while i < n:
        size, key = _phrase_at(keys, i) if keys[i] in _PHRASE_STARTS else (1, keys[i])
        out.append(Token(key, spans[i][0], spans[i + size - 1][1]))
        i += size
    return out


def _phrase_at(keys: list[str], i: int) -> tuple[int, str]:
    for size in range(min(MAX_PHRASE, len(keys) - i), 1, -1):
        phrase = PHRASES.get(tuple(keys[i : i + size]))
        if phrase is not None:
            return size, phrase
    return 1, keys[i]


class Hit(NamedTuple):
    """One fired rule: the token range it covers and its signed weight."""

    first: int
    last: int
    weight: float


class _Sentence:
    """One headline's tokens and which of them rules have used."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.keys = [t.key for t in self.tokens]
        self.used = [False] * len(self.tokens)
        self.clause, self.clause_weight = _clauses(self.keys)

    def distance(self, i: int, j: int) -> int:
        """Content tokens from i to j (fillers and negators are free); a large number across a clause."""
        lo, hi = min(i, j), max(i, j)
        if self.clause[lo] != self.clause[hi]:
            return 1_000
        return 1 + sum(1 for k in self.keys[lo + 1 : hi] if k not in FILLERS and k not in NEGATORS)

    def phrase(self, first: int, last: int) -> str:
        return self.text[self.tokens[first].start : self.tokens[last].end].lower()


def _clauses(keys: list[str]) -> tuple[list[int], list[float]]:
    """Each token's clause number and the clause's weight (subordinate clauses count for less)."""
    ids, weights, current, weight = [], [], 0, 1.0
    for key in keys:
        if key in BARRIERS:
            current += 1
            weight = SUBORDINATE_WEIGHT if key in SUBORDINATORS else 1.0
        ids.append(current)
        weights.append(weight)
    return ids, weights


def _pair_candidates(s: _Sentence) -> list[tuple[bool, int, int, int, int]]:
    """Allowed quantity/direction pairs as sort keys: (not a tight adjective, distance, rank, q, d)."""
    quantities = [i for i, k in enumerate(s.keys) if k in QUANTITIES]
    directions = [i for i, k in enumerate(s.keys) if k in DIRECTIONS]
    found = []
    for q in quantities:
        for d in directions:
            if q == d:
                continue
            entry = DIRECTIONS[s.keys[d]]
            dist = s.distance(q, d)
            allowed = entry.side == "both" or (entry.side == "after") == (d > q)
            if not allowed or dist > entry.reach:
                continue
            loose = not (entry.adjective and d < q and dist == 1)
            rank = 0 if d > q or entry.side == "before" else 1
            found.append((loose, dist, rank, q, d))
    return sorted(found)


def _pairs(s: _Sentence) -> list[Hit]:
    """Each quantity with its nearest direction word; each word used once; adjacent adjectives first."""
    hits = []
    for *_, q, d in _pair_candidates(s):
        if s.used[q] or s.used[d]:
            continue
        s.used[q] = s.used[d] = True
        entry = DIRECTIONS[s.keys[d]]
        quantities = [q]
        other = _coordinated(s, q, d)
        if other is not None:
            s.used[other] = True
            quantities.append(other)
        weight = sum(
            entry.sign if entry.evaluative else entry.sign * QUANTITIES[s.keys[k]] for k in quantities
        )
        hits.append(Hit(min(*quantities, d), max(*quantities, d), PAIR_WEIGHT * weight))
    return hits


def _coordinated(s: _Sentence, q: int, d: int) -> int | None:
    """A second quantity sharing the direction word: "revenue and profit rose", "higher sales and margins"."""
    k = q - 2 if d > q else q + 2
    if 0 <= k < len(s.keys) and s.keys[(q + k) // 2] == "and" and s.keys[k] in QUANTITIES and not s.used[k]:
        return k
    return None


def _expectation_after(s: _Sentence, i: int) -> int | None:
    for j in range(i + 1, min(i + 4, len(s.keys))):
        if s.clause[j] != s.clause[i]:
            return None
        if s.keys[j] in EXPECTATIONS:
            return j
    return None


def _events_and_leftovers(s: _Sentence) -> list[Hit]:
    """Event terms, then unpaired quantities and direction words that carry news by themselves."""
    hits = []
    for i, key in enumerate(s.keys):
        if s.used[i]:
            continue
        event = EVENTS.get(key)
        if event is not None:
            target = _expectation_after(s, i)
            if event.needs_expectation and target is None:
                continue
            last = i if target is None else target
            for k in range(i, last + 1):
                s.used[k] = True
            hits.append(Hit(i, last, event.weight))
        elif key in BARE_QUANTITIES:
            s.used[i] = True
            hits.append(Hit(i, i, BARE_QUANTITIES[key]))
        elif key in DIRECTIONS and DIRECTIONS[key].alone:
            s.used[i] = True
            entry = DIRECTIONS[key]
            hits.append(Hit(i, i, entry.alone * entry.sign))
        elif key in NEUTRAL:
            s.used[i] = True
    return hits


def _negate(s: _Sentence, hit: Hit) -> Hit:
    """Flip a hit when a negator sits inside it or just before it in the same clause."""
    for k in range(hit.first, hit.last + 1):
        if s.keys[k] in NEGATORS:
            s.used[k] = True
            return Hit(hit.first, hit.last, -hit.weight)
    k = hit.first - 1
    while k >= 0 and s.distance(k, hit.first) <= NEGATION_REACH and s.clause[k] == s.clause[hit.first]:
        if s.keys[k] in NEGATORS and not s.used[k]:
            s.used[k] = True
            return Hit(k, hit.last, -hit.weight)
        k -= 1
    return hit


def _dictionary_words(s: _Sentence, polarity: Callable[[str], int], after_rules: bool) -> list[Hit]:
    """Words no rule used, scored by the fallback dictionary (negation-aware)."""
    hits = []
    skip = _NOT_DICTIONARY_AFTER_RULES if after_rules else _NOT_DICTIONARY
    for i, key in enumerate(s.keys):
        if s.used[i] or not key.isalpha() or key in skip:
            continue
        sign = polarity(key)
        if sign:
            hits.append(Hit(i, i, WORD_WEIGHT * sign))
    return hits


def score_text(text: str, polarity: Callable[[str], int]) -> tuple[float, tuple[str, ...]]:
    """The finance rules on one headline: score in [-1, 1] and the matched phrases, in text order."""
    s = _Sentence(text)
    hits = [_negate(s, h) for h in _pairs(s) + _events_and_leftovers(s)]
    hits += [_negate(s, h) for h in _dictionary_words(s, polarity, after_rules=bool(hits))]
    hits.sort()
    raw = sum(h.weight * s.clause_weight[h.first] for h in hits)
    return math.tanh(raw), tuple(s.phrase(h.first, h.last) for h in hits)
