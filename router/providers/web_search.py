"""A provider's own web search, per protocol: what each can apply, and sources read back. Pure.

`ChatRequest.web_search` (set by fusion for panelists that research, never from a client's
request) turns it on for one call. What each protocol (`ProviderConfig.protocol`) sends and
reads back:

- `openai` (Chat Completions): `web_search_options: {}`; real OpenAI needs a search model
  upstream (`gpt-5-search-api`, `gpt-4o-search-preview`). Sources: the message's `url_citation`
  annotations. Searches: 1 a call (OpenAI bills per search call and reports no count); a
  count in the response's `usage.server_tool_use.web_search_requests` is taken instead.
  `blocked_domains` is not applied: Chat Completions has no domain filter.
- `anthropic`: the server tool `{"type": "web_search_20250305", "name": "web_search",
  "max_uses": N}` (with `blocked_domains` when there are any) among `tools`. Sources: the
  `web_search_result_location` citations of the text blocks, in order; an answer citing
  nothing gets every `web_search_tool_result` result instead. Searches:
  `usage.server_tool_use.web_search_requests`.
- `gemini`: the tool `{"googleSearch": {}}` among `tools`. Sources:
  `candidates[0].groundingMetadata.groundingChunks[].web` (`uri`, `title`; Gemini's `uri` is
  a redirect link through Google, its `title` the site's domain). Searches:
  `len(groundingMetadata.webSearchQueries)`. `blocked_domains` is not applied: the Gemini
  API does not support `googleSearch.excludeDomains` (Vertex AI only), so it is not sent.
- `sim`: nothing is sent; 1-3 made-up pages named after the question, on `*.example` domains
  never on a blocked one. Searches: 1 a call.

Sources come only with whole answers; a streamed answer relays its text (and counts its
searches) but carries no sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from router.types import Source

# Per protocol (`ProviderConfig.protocol`): whether `WebSearch.blocked_domains` is applied.
BLOCKED_DOMAINS_APPLIED: Mapping[str, bool] = {
    "openai": False,
    "anthropic": True,
    "gemini": False,
    "sim": True,
}
# Why a protocol cannot apply `blocked_domains` (one line each; the others have none).
BLOCKED_DOMAINS_REASON: Mapping[str, str] = {
    "openai": "Chat Completions' web_search_options has no domain filter",
    "gemini": "the Gemini API does not support googleSearch.excludeDomains (Vertex AI only)",
}


def blocked_domains_applied(protocol: str) -> bool:
    """Whether a provider speaking `protocol` honours `WebSearch.blocked_domains` (an unknown
    protocol does not)."""
    return BLOCKED_DOMAINS_APPLIED.get(protocol, False)


def blocked_domains_reason(protocol: str) -> str | None:
    """Why `protocol` cannot apply `blocked_domains`, or None where it can."""
    if blocked_domains_applied(protocol):
        return None
    return BLOCKED_DOMAINS_REASON.get(protocol, f"the {protocol} protocol has no domain filter")


def source(url: Any, title: Any = "") -> Source | None:
    """A `Source` from an upstream's URL and title, or None for a URL that is not a non-empty
    string (a title that is not a string is left out)."""
    if not isinstance(url, str) or not url.strip():
        return None
    return Source(url.strip(), title.strip() if isinstance(title, str) else "")


def dedupe_sources(sources: Iterable[Source | None]) -> tuple[Source, ...]:
    """`sources` without repeats (by URL, the first place kept) and without Nones; a repeat
    with a title gives its title to a first sighting that had none."""
    seen: dict[str, Source] = {}
    for one in sources:
        if one is None:
            continue
        first = seen.get(one.url)
        if first is None or (not first.title and one.title):
            seen[one.url] = one
    return tuple(seen.values())


def host_blocked(host: str, blocked_domains: Iterable[str]) -> bool:
    """Whether `host` is one of `blocked_domains` or under one (`example.com` blocks
    `docs.example.com`), as Anthropic's filter reads them."""
    host = host.lower().rstrip(".")
    for given in blocked_domains:
        domain = given.lower().strip().removeprefix("*.").rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False
