"""What the simulated provider says beyond prose: tool calls, JSON values for a schema, notes on
images, answers from tool results, and reasoning text. Pure and deterministic.

The rules (`router.providers.sim` decides which applies to a request):

- **Which tool.** A named `tool_choice` calls that function. Otherwise each tool scores the
  words of the last user message it shares: two points for a word of its name (`get_weather`
  is `get` and `weather`), one for a word of its description. The best score wins; on a tie,
  the one whose name the message mentions first, then the first listed. With
  `parallel_tool_calls` not false, the next tool whose *name* shares a word is called too (at
  most two calls). A second call takes the message's next capitalised name ("the weather in
  Oslo and the time in Tokyo": `get_weather(city=Oslo)`, `get_time(timezone=Tokyo)`).
- **Arguments and JSON answers** come from the JSON schema (`value_for`): `const`, an `enum`
  value the message names or else the first, `anyOf`/`oneOf` first branch, `allOf` merged,
  local `$ref`s (`#/$defs/...`), every declared property (required ones only past a depth of
  six, so recursive schemas end), `additionalProperties: false` respected, arrays of
  `minItems` (at least one; items told apart for `uniqueItems`), bounds and integer `multipleOf` on numbers, `minLength`,
  `maxLength` and common `format`s on strings. `pattern` is not honoured. A string comes from
  the message where a match is sensible: the word after the property's name ("order 1234"), a
  capitalised name for a place or a person, the question itself for a query, the simulator's
  prose for a summary or an answer; else a placeholder ("example unit").
- **Web search** (`web_sources`): 1-3 made-up pages named after the question
  (`https://sim.example/<slug>`, titles opening "SIMULATED:"), on the `.example` domains of
  `SIM_SEARCH_DOMAINS` only (reserved: never a real site), skipping any a blocked domain
  covers (`sim.example` blocked: `sim-research.example`...; all blocked: none). The answer
  names them (`sources_note`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from router.providers.web_search import host_blocked
from router.types import ImagePart, Message, ReasoningEffort, Source


def _wordset(words: str) -> frozenset[str]:
    """The words of a space-separated list."""
    return frozenset(words.split())


_TOKEN = re.compile(r"-?\d+(?:\.\d+)?|[^\W\d_][\w'-]*|\d\w*")
_CAMEL = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_STOP = _wordset(
    "a an and are as at be by can could do does for from get give how i in is it its me my of"
    " on or please show tell that the this to was what when where which who why will with would"
    " you your what's how's where's let's i'm"
)
_PLACE = _wordset(
    "city location place town country region destination origin address where state area"
    " venue departure arrival timezone tz"
)
_PERSON = _wordset("name person user username author who company customer recipient contact owner")
_QUERY = _wordset("query q search question prompt input topic keyword keywords term text")
_PROSE = _wordset(
    "answer summary description explanation reason rationale response reply content body"
    " message comment note notes analysis details title"
)
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "12:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_DEPTH = 6  # past this depth an object gets only its required properties, an array its minimum
_FILLERS = (
    "Consider what is actually being asked before answering.",
    "State the assumptions plainly.",
    "Weigh the two most plausible readings of the question.",
    "Rule out the reading that contradicts the context.",
    "Check the figures against what is commonly reported.",
    "Look for a counterexample to the first idea.",
    "Draft the answer, then check it against the question.",
    "Keep the answer short and name the caveat.",
)
_STEPS: Mapping[str, int] = {"minimal": 0, "low": 1, "medium": 2, "high": 4, "xhigh": 6}


def name_words(name: str) -> tuple[str, ...]:
    """The lowercase words of an identifier: `get_weather`, `cityName` → ("get", "weather")…"""
    return tuple(w.lower() for part in re.split(r"[\W_]+", name) for w in _CAMEL.findall(part))


def _stem(word: str) -> str:
    """A word folded for matching: lowercase, a plural `s` dropped."""
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


class Words:
    """The words of a user's message, read the ways the generators need them (each reading
    made on first use: a plain prose answer needs none)."""

    def __init__(self, text: str, prose: str = "") -> None:
        self.text = text
        self.prose = prose  # the simulator's sentence, for a summary or an answer field

    @cached_property
    def tokens(self) -> tuple[str, ...]:
        """Words and numbers, in order."""
        return tuple(m.group() for m in _TOKEN.finditer(self.text))

    @cached_property
    def folded(self) -> tuple[str, ...]:
        """The tokens folded for matching (`_stem`)."""
        return tuple(_stem(t) for t in self.tokens)

    @cached_property
    def proper(self) -> tuple[str, ...]:
        """The capitalised names (`_proper_nouns`)."""
        return _proper_nouns(self.text)

    @property
    def topic(self) -> str:
        """The message's first twelve words, as one line."""
        return " ".join(self.text.split()[:12])

    def matches(self, words: Sequence[str]) -> set[str]:
        """Which of `words` (folded) the message has, stopwords left out."""
        return {w for w in map(_stem, words) if w not in _STOP and len(w) > 1} & set(self.folded)

    def after(self, hints: Sequence[str]) -> str | None:
        """The word that follows one of `hints` in the message ("order 1234" → "1234"),
        skipping a joining word ("city of Oslo", "name is Ann")."""
        wanted = {_stem(h) for h in hints if h not in _STOP}
        for i, word in enumerate(self.folded[:-1]):
            if word in wanted:
                for follower in self.tokens[i + 1 : i + 3]:
                    if follower.lower() not in _STOP:
                        return follower
        return None

    def number_near(self, hints: Sequence[str]) -> float | None:
        """A number just before or after one of `hints` ("3 days", "days: 3"), or None."""
        wanted = {_stem(h) for h in hints if h not in _STOP}
        for i, word in enumerate(self.folded):
            if word in wanted:
                for j in (i + 1, i - 1):
                    if 0 <= j < len(self.tokens) and _is_number(self.tokens[j]):
                        return float(self.tokens[j])
        return None


def _is_number(token: str) -> bool:
    """Whether a token is a number ("3", "-2.5")."""
    return re.fullmatch(r"-?\d+(?:\.\d+)?", token) is not None


def _proper_nouns(text: str) -> tuple[str, ...]:
    """Capitalised words that are not a stopword: those inside a sentence ("Weather in Oslo" →
    "Oslo"), or, when there are none, those opening one ("Oslo weather" → "Oslo")."""
    inside: list[str] = []
    opening: list[str] = []
    for m in _TOKEN.finditer(text):
        word = m.group()
        if not word[0].isupper() or word.lower() in _STOP:
            continue
        before = text[: m.start()].rstrip()
        (opening if not before or before[-1] in ".?!:\n" else inside).append(word)
    return tuple(dict.fromkeys(inside or opening))


# --- tools -------------------------------------------------------------------------------


def tool_function(tool: Any) -> Mapping[str, Any]:
    """A tool's `function` object (OpenAI's shape), or an empty one."""
    function = tool.get("function") if isinstance(tool, Mapping) else None
    return function if isinstance(function, Mapping) else {}


def chosen_tools(
    tools: Sequence[Any], tool_choice: Any, parallel: bool, words: Words
) -> tuple[Mapping[str, Any], ...]:
    """The functions the simulator calls (their `function` objects), by the module's rule;
    none when `tool_choice` is "none" or there are no tools."""
    functions = [tool_function(t) for t in tools]
    if tool_choice == "none" or not functions:
        return ()
    if isinstance(tool_choice, Mapping):
        name = tool_function(tool_choice).get("name")
        named = [f for f in functions if f.get("name") == name]
        return (named[0] if named else {"name": name, "parameters": {}},)
    ranked = sorted(
        range(len(functions)),
        key=lambda i: (-_score(functions[i], words), _mention(functions[i], words), i),
    )
    best, *others = (functions[i] for i in ranked)
    if not parallel:
        return (best,)
    return (best, *[f for f in others if _mention(f, words) < len(words.folded)][:1])


def _mention(function: Mapping[str, Any], words: Words) -> int:
    """Where the message first names a word of the function's name (its length if nowhere)."""
    named = words.matches(name_words(str(function.get("name", ""))))
    return min((i for i, w in enumerate(words.folded) if w in named), default=len(words.folded))


def _score(function: Mapping[str, Any], words: Words) -> int:
    """How well a function matches the message: two points a name word, one a description
    word."""
    named = words.matches(name_words(str(function.get("name", ""))))
    described = words.matches(_TOKEN.findall(str(function.get("description") or ""))) - named
    return 2 * len(named) + len(described)


def tool_results_text(messages: Sequence[Message], words: Words) -> str:
    """The answer to a conversation ending in tool results: what each tool returned."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls:
            if isinstance(call, Mapping):
                names[str(call.get("id"))] = str(tool_function(call).get("name", "the tool"))
    results: list[str] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        content = " ".join(message.content.split())
        content = content if len(content) <= 200 else content[:199] + "\u2026"
        results.append(f"{names.get(str(message.tool_call_id), 'the tool')}: {content}")
    based = "; ".join(reversed(results))
    question = f" That answers \u201c{words.topic}\u201d." if words.topic else ""
    return f"Based on {based}.{question}"


# --- images ------------------------------------------------------------------------------


def images_note(images: Sequence[ImagePart]) -> str:
    """A sentence acknowledging `images`: media type and size of a data URL, the host of a URL
    (never fetched). Empty without images."""
    if not images:
        return ""
    seen = "; ".join(_image_seen(image) for image in images)
    plural = "" if len(images) == 1 else "s"
    return f"I see {len(images)} image{plural} ({seen})."


def _image_seen(image: ImagePart) -> str:
    """One image as the note names it: "image/png, 68 bytes" or "an image at <host>"."""
    inline = image.inline
    if inline is None:
        return f"an image at {urlsplit(image.url).hostname or 'an unknown host'}"
    media_type, data = inline
    size = len(data.strip().rstrip("=")) * 3 // 4
    return f"{media_type}, {size} bytes"


# --- reasoning ---------------------------------------------------------------------------


def reasoning_text(effort: ReasoningEffort | None, topic: str, plan: str, n: int) -> str:
    """The reasoning shown for `effort` (empty for None or "none"): the question, `n`-chosen
    steps (more for more effort, so longer), then `plan`."""
    if effort is None or effort == "none":
        return ""
    steps = [_FILLERS[(n + i) % len(_FILLERS)] for i in range(_STEPS[effort])]
    return " ".join([f"The question is about \u201c{topic}\u201d.", *steps, plan])


# --- web search --------------------------------------------------------------------------

# The made-up domains a simulated search finds pages on, in order of preference (`.example`
# is reserved: never a real site).
SIM_SEARCH_DOMAINS = ("sim.example", "sim-research.example", "sim-archive.example")
_PAGES = (("", "overview"), ("/background", "background"), ("/figures", "figures and data"))
_SLUG_WORDS = 6


def _slug(words: Words) -> str:
    """The question's first content words, lowercase, joined by hyphens ("answer" if none)."""
    kept = [w.lower() for w in words.tokens if w.lower() not in _STOP and w.isascii()]
    kept = ["".join(c for c in w if c.isalnum() or c == "-").strip("-") for w in kept]
    return "-".join([w for w in kept if w][:_SLUG_WORDS]) or "answer"


def web_sources(words: Words, n: int, blocked_domains: Sequence[str] = ()) -> tuple[Source, ...]:
    """The pages a simulated search finds for the question in `words`: 1-3 (by `n`), on the
    first of `SIM_SEARCH_DOMAINS` no blocked domain covers (none if every one is blocked)."""
    allowed = [d for d in SIM_SEARCH_DOMAINS if not host_blocked(d, blocked_domains)]
    if not allowed:
        return ()
    slug, topic = _slug(words), words.topic or "the question"
    return tuple(
        Source(f"https://{allowed[0]}/{slug}{path}", f"SIMULATED: {topic} \u2014 {what}")
        for path, what in _PAGES[: 1 + n % len(_PAGES)]
    )


def sources_note(sources: Sequence[Source]) -> str:
    """A sentence naming the pages a simulated search found, numbered as the answer cites
    them."""
    if not sources:
        return "A simulated web search found no page outside the blocked domains."
    listed = "; ".join(f"[{i}] {s.title} <{s.url}>" for i, s in enumerate(sources, 1))
    return f"Sources (simulated web search): {listed}."


# --- values for a JSON schema ------------------------------------------------------------


def value_for(schema: Any, words: Words, hint: str = "", *, names_from: int = 0) -> Any:
    """A JSON value valid against `schema` (the module's subset), with strings and numbers
    taken from `words` where they fit; `hint` names the value (a property's name). Names for
    places and people start at the message's `names_from`-th (a second call takes the next)."""
    return _Generator(schema, words, names_from).value(schema, hint, 0, 0)


class _Generator:
    """One generation: the root schema (for `$ref`s), and which capitalised names are used."""

    def __init__(self, root: Any, words: Words, names_from: int) -> None:
        self.root = root
        self.words = words
        self.names_from = names_from
        self.taken: set[str] = set()  # words already used for a value

    def value(self, schema: Any, hint: str, depth: int, variant: int) -> Any:
        """A value for `schema`, the `variant`-th of its kind (array items differ)."""
        schema = self.resolve(schema, depth)
        if not isinstance(schema, Mapping):
            return self.string({}, hint, variant)  # `true` or `{}`: anything goes
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.enum(schema["enum"], variant)
        kind = _kind(schema)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, hint, depth)
        if kind in ("integer", "number"):
            near = self.words.number_near(name_words(hint)) if hint else None
            return _number(schema, near, integer=kind == "integer", variant=variant)
        if kind == "boolean":
            return variant % 2 == 0
        if kind == "null":
            return None
        return self.string(schema, hint, variant)

    def resolve(self, schema: Any, depth: int) -> Any:
        """`schema` with its `$ref`, `allOf` and first `anyOf`/`oneOf` branch folded in."""
        for _ in range(32):  # a chain of references ends, or is cut
            if not isinstance(schema, Mapping):
                return schema
            rest = dict(schema)
            if isinstance(ref := rest.pop("$ref", None), str):
                schema = _merge(_pointer(self.root, ref), rest)
            elif isinstance(branches := rest.pop("allOf", None), list):
                for branch in branches:
                    rest = _merge(rest, self.resolve(branch, depth))
                schema = rest
            elif isinstance(branches := rest.pop("anyOf", None), list) or isinstance(
                branches := rest.pop("oneOf", None), list
            ):
                schema = _merge(rest, _branch(branches, depth) if branches else {})
            else:
                return schema
        return schema

    def enum(self, values: list[Any], variant: int) -> Any:
        """The value the message names, else the first (the `variant`-th, in an array)."""
        if variant:
            return values[variant % len(values)]
        for v in values:
            if isinstance(v, str) and v and self.words.matches([v]) == {_stem(v)}:
                return v
        return values[0]

    def object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        """Every declared property (only the required ones past the depth limit), and extra
        ones from `additionalProperties` up to `minProperties`."""
        props = schema.get("properties") or {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        keys = list(dict.fromkeys([*required, *(props if depth < _DEPTH else ())]))
        if isinstance(most := schema.get("maxProperties"), int):
            keys = keys[: max(most, len(required))]
        order = [k for k in props if k in keys] + [k for k in keys if k not in props]
        extra = schema.get("additionalProperties", True)
        out = {k: self.value(props.get(k, extra), k, depth + 1, 0) for k in order}
        least = schema.get("minProperties")
        while isinstance(least, int) and len(out) < least and extra is not False:
            out[f"extra_{len(out) + 1}"] = self.value(extra, "", depth + 1, 0)
        return out

    def array(self, schema: Mapping[str, Any], hint: str, depth: int) -> list[Any]:
        """`minItems` items (at least one above the depth limit), their values told apart."""
        given = schema.get("prefixItems")
        prefix: list[Any] = given if isinstance(given, list) else []
        items = schema.get("items", True)
        count = max(_int(schema, "minItems", 0), 1 if depth < _DEPTH else 0)
        count = min(count, _int(schema, "maxItems", count))
        if items is False:
            count = min(count, len(prefix))
        item_hint = _singular(hint)
        return [
            self.value(prefix[i] if i < len(prefix) else items, item_hint, depth + 1, i)
            for i in range(count)
        ]

    def string(self, schema: Mapping[str, Any], hint: str, variant: int) -> str:
        """A `format`'s example or words for `hint`, fitted to `minLength` and `maxLength`."""
        text = _FORMATS.get(str(schema.get("format")), "") or self.words_for(hint)
        if variant:
            text = f"{text} {variant + 1}"
        text = text + "x" * (_int(schema, "minLength", 0) - len(text))
        most = _int(schema, "maxLength", len(text))
        if len(text) > most:
            suffix = str(variant + 1) if variant else ""
            text = text[: max(most - len(suffix), 0)] + suffix[:most]
        return text

    def words_for(self, hint: str) -> str:
        """A string for a value named `hint`, from the message where the match is sensible."""
        hints = name_words(hint)
        words = self.words
        if _QUERY.intersection(hints) and words.text.strip():
            return " ".join(words.text.split()).rstrip("?.!")
        if _PROSE.intersection(hints) and words.prose:
            return words.prose
        found = words.after(hints) if hints else None
        if found is None and (_PLACE | _PERSON).intersection(hints) and words.proper:
            start = self.names_from % len(words.proper)
            turn = words.proper[start:] + words.proper[:start]
            found = next((p for p in turn if p not in self.taken), turn[0])
        if found is not None:
            self.taken.add(found)
            return found
        return f"example {' '.join(hints)}" if hints else "example"


def _int(schema: Mapping[str, Any], key: str, default: int) -> int:
    """An integer keyword's value (`minItems`...), or `default`."""
    given = schema.get(key)
    return given if isinstance(given, int) and not isinstance(given, bool) else default


def _kind(schema: Mapping[str, Any]) -> str:
    """The type to generate: the first non-null of `type`, else guessed from the keywords."""
    given = schema.get("type")
    kinds = given if isinstance(given, list) else [given] if isinstance(given, str) else []
    for kind in kinds:
        if kind != "null":
            return str(kind)
    if kinds:
        return "null"
    if {"properties", "required", "additionalProperties"} & set(schema):
        return "object"
    if {"items", "prefixItems", "minItems", "maxItems"} & set(schema):
        return "array"
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & set(schema):
        return "number"
    return "string"


def _branch(branches: list[Any], depth: int) -> Any:
    """An `anyOf` branch: the first, or past the depth limit a `null` one if there is one (a
    recursive schema's way out)."""
    if depth >= _DEPTH:
        for branch in branches:
            if isinstance(branch, Mapping) and branch.get("type") == "null":
                return branch
    return branches[0]


def _merge(base: Any, more: Mapping[str, Any]) -> Any:
    """`base` with `more`'s keywords added: properties merged, required joined."""
    if not isinstance(base, Mapping):
        return dict(more) if base is not False else base
    out = {**base, **more}
    if isinstance(base.get("properties"), Mapping) and isinstance(more.get("properties"), Mapping):
        out["properties"] = {**base["properties"], **more["properties"]}
    if isinstance(base.get("required"), list) and isinstance(more.get("required"), list):
        out["required"] = list(dict.fromkeys([*base["required"], *more["required"]]))
    return out


def _pointer(root: Any, ref: str) -> Any:
    """The schema a local `$ref` ("#", "#/$defs/Name") points at; `{}` for any other."""
    if not ref.startswith("#"):
        return {}
    node = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return {}
    return node


def _singular(hint: str) -> str:
    """An array's item name from the array's: `cities` → `city`, `tags` → `tag`."""
    if hint.endswith("ies"):
        return hint[:-3] + "y"
    return hint[:-1] if hint.endswith("s") and not hint.endswith("ss") else hint


def _number(
    schema: Mapping[str, Any], want: float | None, *, integer: bool, variant: int
) -> int | float:
    """A number within the schema's bounds (and a multiple of an integer `multipleOf`), as close
    to `want` (or 1) as they allow; the `variant`-th steps further."""
    lo, xlo, hi, xhi = (
        _num(schema.get(k)) for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
    )
    step = _num(schema.get("multipleOf"))
    if step is not None and step <= 0:
        step = None
    if integer:  # the integers that are multiples of p/q are the multiples of p
        step = 1.0 if step is None else float(Fraction(str(step)).limit_denominator().numerator)
    base = want if want is not None else (step or 1.0)
    if step is None:
        return _bounded(base + variant, lo, xlo, hi, xhi)
    k_lo = max(
        math.ceil(lo / step) if lo is not None else -math.inf,
        math.floor(xlo / step) + 1 if xlo is not None else -math.inf,
    )
    k_hi = min(
        math.floor(hi / step) if hi is not None else math.inf,
        math.ceil(xhi / step) - 1 if xhi is not None else math.inf,
    )
    k = round(base / step) + variant
    k = int(k_lo) if k < k_lo else int(k_hi) if k > k_hi else k
    if integer or step == int(step):
        whole = k * int(step)
        return whole if integer else float(whole)
    for candidate in sorted(range(k - 20, k + 21), key=lambda c: abs(c - k)):
        value = round(candidate * step, 12)
        if k_lo <= candidate <= k_hi and value / step == int(value / step):
            return value
    return 0.0  # zero is a multiple of anything; bounds that exclude it are not honoured


def _num(given: Any) -> float | None:
    """A numeric keyword's value as a float (booleans are not numbers), or None."""
    return float(given) if isinstance(given, int | float) and not isinstance(given, bool) else None


def _bounded(
    value: float, lo: float | None, xlo: float | None, hi: float | None, xhi: float | None
) -> float:
    """`value`, or a number inside the bounds when it falls outside them."""
    inside = (
        (lo is None or value >= lo)
        and (xlo is None or value > xlo)
        and (hi is None or value <= hi)
        and (xhi is None or value < xhi)
    )
    if inside:
        return value
    low, low_open = _tighter(lo, xlo, max)
    high, high_open = _tighter(hi, xhi, min)
    if low is not None and high is not None:
        return (low + high) / 2 if low_open else low
    if low is not None:
        return low + 1 if low_open else low
    if high is not None:
        return high - 1 if high_open else high
    return value


def _tighter(
    closed: float | None, open_: float | None, pick: Callable[[float, float], float]
) -> tuple[float | None, bool]:
    """The tighter of a closed and an open bound on one side, and whether it is the open one."""
    if open_ is None:
        return closed, False
    if closed is None:
        return open_, True
    tight = pick(closed, open_)
    return tight, tight == open_
