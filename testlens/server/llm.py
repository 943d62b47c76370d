"""The optional language model: root-cause explanations and fix proposals.

Any OpenAI-compatible chat-completions API will do (OpenAI, a local vLLM or Ollama), set by
``TESTLENS_LLM_BASE_URL`` and ``TESTLENS_LLM_MODEL``. Without them nothing here is called
and the built-in classifier's explanation stands; with them the ``openai`` client (the
``llm`` extra) is imported only when the first model is built, so the server runs without
the package installed.

The model is a helper, never a dependency: a failure, a timeout (one retry at most) or an
empty answer gives None and the caller keeps what it had. Nothing secret leaves the server:
every string sent is passed through :func:`scrub` first, which knows the shapes of the
tokens, keys and credentials that end up in test output (tokens printed by a CI step, a
database URL in an exception, ``Authorization`` headers in a failed HTTP call, an
environment dump). :mod:`testlens.server.logredact` masks secret query parameters in the
access log; :func:`scrub` covers those same parameter names, and the rest, in free text.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from ..core.fix_proposals import apply_diff
from .auth import KEY_PREFIX
from .logredact import KEY_PARAMETERS
from .settings import Settings

if TYPE_CHECKING:
    import openai

log = logging.getLogger("testlens.server.llm")

MARKER = "[secret]"
"""What a secret is replaced with in what the model is sent."""
RETRY_DELAY_SECONDS = 0.5
MAX_EXPLANATION_CHARS = 600
MAX_SUMMARY_CHARS = 300
MAX_SOURCE_CHARS = 60_000
"""Test sources longer than this (all files together) are not sent: a fix is not proposed."""
_MAX_EVIDENCE_CHARS = 24_000
_MAX_ITEMS = 20  # of any list in the evidence

# Names that mark the value after them as a secret, in key=value, key: value and JSON form
# (anywhere in the key: DB_PASSWORD, aws_secret_access_key, X-Api-Key). The access log's
# key parameters are among them; "_" matches "-" or nothing (api_key, api-key, apikey).
_SECRET_NAMES = (
    *KEY_PARAMETERS,
    "password",
    "passwd",
    "passphrase",
    "secret",
    "private_key",
    "access_key",
    "credential",
    "signature",
)
_NAMES = "|".join(sorted({n.replace("_", "[_-]?") for n in _SECRET_NAMES}, key=len, reverse=True))
_QUOTED = r"""\\"[^"\n]*?\\"|"[^"\n]*"|'[^'\n]*'"""
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, whole blocks (or to the end, when a log cut one short).
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----.*?"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)",
            re.S,
        ),
        "",
    ),
    # Credentials in URLs: scheme://user:password@host, scheme://long-token@host.
    (re.compile(r"\b([a-z][a-z0-9+.-]*://)(?:[^\s/@:]*:[^\s/@]*|[\w.~-]{20,})(?=@)", re.I), r"\1"),
    # Authorization and cookie headers, whatever scheme follows.
    (
        re.compile(
            r"""(\\?["']?\b(?:proxy-)?(?:authorization|set-cookie|cookie)\\?["']?\s*[:=]\s*)"""
            rf"""(?:{_QUOTED}|[^\n]+)""",
            re.I,
        ),
        r"\1",
    ),
    (re.compile(r"\b(bearer\s+)[\w\-.~+/]+=*", re.I), r"\1"),
    # key=value, key: value, "key": "value", --key value.
    (
        re.compile(
            rf"""(\\?["']?[\w.-]*(?:{_NAMES})[\w.-]*\\?["']?\s*[:=]\s*)"""
            rf"""(?:{_QUOTED}|[^\s"'&,;<>()\[\]{{}}]+)""",
            re.I,
        ),
        r"\1",
    ),
    (re.compile(rf"""(--[\w-]*(?:{_NAMES})[\w-]*\s+)[^\s"'-]\S*""", re.I), r"\1"),
    (re.compile(r"([?&]sig=)[^&#\s]+"), r"\1"),
    # Tokens recognisable by their shape.
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,})"), ""),
    (re.compile(rf"\b{KEY_PREFIX}[\w-]{{8,}}"), ""),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), ""),
    (re.compile(r"\bxox[abprs]-[\w-]{10,}"), ""),
    (re.compile(r"\bAIza[\w-]{30,}"), ""),
    (re.compile(r"\bey[IJ][\w-]{5,}\.ey[IJ][\w-]{5,}\.[\w-]*"), ""),
)
_THINKING = re.compile(r"<think>.*?(?:</think>|\Z)", re.S)
_FENCED_DIFF = re.compile(r"```[ \t]*(?:diff|patch|udiff)?[ \t]*\n(.*?)(?:```|\Z)", re.S)

_EXPLAIN = (
    "You explain why an automated test fails, for the engineers who own it. Use only the "
    "evidence given. Answer with one or two plain sentences, without lists or markdown, that "
    "name the most likely root cause and the evidence that shows it (for example the error, "
    "the flip pattern, the environment failures concentrate on, a test that runs before it, "
    "or the tests failing with it). When the evidence supports no cause, say which evidence "
    "is missing instead of guessing."
)
_PROPOSE = (
    "You fix flaky automated tests. You are given a test's source files and the evidence of "
    "why it fails. Answer with one sentence saying what the fix changes, then a minimal "
    "unified diff in a ```diff block: '--- a/PATH' and '+++ b/PATH' headers naming the files "
    "exactly as given, and @@ hunks with three lines of context copied exactly. Fix the root "
    "cause. Do not add sleeps or fixed waits, retries or reruns, longer timeouts, or skip, "
    "xfail or only markers, and do not remove or loosen assertions: such changes are "
    "refused. Change only the files given."
)


def scrub(text: str) -> str:
    """``text`` with every token, key, password and credential replaced by :data:`MARKER`."""
    for pattern, keep in _PATTERNS:
        text = pattern.sub(keep + MARKER, text)
    return text


class Explanation(NamedTuple):
    """A root-cause explanation the model wrote, and the model that wrote it (for the
    test's ``ai_model_used``). A pair, so :meth:`LanguageModel.explain` is the explainer
    :func:`testlens.server.rootcause.service.analyze` takes."""

    text: str
    model: str


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposed fix: the diff as the model wrote it, a one-sentence summary, the model,
    and ``files``, the full text of each file once the diff is applied (what a pull request
    commits). The caller still runs :func:`testlens.core.fix_proposals.check` on ``diff``."""

    diff: str
    summary: str
    model: str
    files: Mapping[str, str]


class LanguageModel:
    """One configured OpenAI-compatible endpoint. Thread-safe: the server shares one."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout_seconds: float = 30
    ) -> None:
        import openai  # the optional `llm` extra; settings checked it is there at start-up

        self.model = model
        self._host = urlsplit(base_url).hostname or "?"
        # A local server may need no key; the client insists on one, and must not fall back
        # to an OPENAI_API_KEY in the environment meant for something else.
        self._client: openai.OpenAI = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "none",
            timeout=timeout_seconds,
            max_retries=0,  # retried here, once and promptly (see _complete)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LanguageModel | None:
        """The model the settings configure, or None when they configure none."""
        if not (settings.llm_base_url and settings.llm_model):
            return None
        return cls(
            settings.llm_base_url,
            settings.llm_model,
            settings.llm_api_key,
            settings.llm_timeout_seconds,
        )

    def close(self) -> None:
        self._client.close()

    def explain(self, evidence: Mapping[str, Any]) -> Explanation | None:
        """One or two sentences on the root cause, from ``evidence`` (the built-in
        classifier's category and confidence, the signatures with counts, the flip pattern,
        environment concentration, order dependency, the co-failing cluster: whatever the
        caller collected); None when the model fails, times out or says nothing."""
        answer = self._complete(_EXPLAIN, "Evidence collected by testlens:\n" + _render(evidence))
        if answer is None:
            return None
        text, model = answer
        text = _capped(" ".join(_THINKING.sub("", text).split()).strip("\"'` "))
        return Explanation(scrub(text), model) if text else None

    def propose_fix(
        self, test_name: str, test_source: Mapping[str, str], evidence: Mapping[str, Any]
    ) -> Proposal | None:
        """A minimal diff fixing the root cause of ``test_name``, whose files are
        ``test_source`` (path in the repository -> text). None when the model fails, or its
        answer is not a unified diff that modifies only those files and applies to them."""
        if not test_source or sum(len(text) for text in test_source.values()) > MAX_SOURCE_CHARS:
            log.info("no fix proposed for a test whose source is missing or too long")
            return None
        files = "\n".join(
            f"File {scrub(path)}:\n```\n{scrub(text)}\n```\n" for path, text in test_source.items()
        )
        prompt = (
            f"Test: {scrub(test_name)}\n\nEvidence collected by testlens:\n{_render(evidence)}\n\n"
            + files
        )
        answer = self._complete(_PROPOSE, prompt)
        if answer is None:
            return None
        text, model = answer
        text = _THINKING.sub("", text)
        diff, summary = _split_answer(text)
        try:
            patched = apply_diff(diff, test_source)
        except ValueError as exc:
            log.warning("the LLM's fix for a test was not used: %s", exc)
            return None
        summary = _capped(scrub(" ".join(summary.split())), MAX_SUMMARY_CHARS)
        summary = summary or f"A fix for {test_name}"
        return Proposal(diff, summary, model, patched)

    def _complete(self, system: str, user: str) -> tuple[str, str] | None:
        """The model's answer to one exchange, and the model that gave it; None on any
        failure, logged by kind only (an error's text may quote what was sent).

        A refused or dropped connection, a timeout, and a 408, 409, 429 or 5xx answer are
        retried once, after :data:`RETRY_DELAY_SECONDS` whatever ``Retry-After`` asks: the
        analysis waiting on the answer is bounded by two timeouts and that delay."""
        import openai

        failure = ""
        for attempt in range(2):
            if attempt:
                time.sleep(RETRY_DELAY_SECONDS)
            try:
                completion = self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                )
                content = completion.choices[0].message.content
                answered = completion.model or self.model
            except openai.APIStatusError as exc:
                failure = f"{type(exc).__name__} {exc.status_code}"
                if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    break
            except openai.APIConnectionError as exc:  # refused, reset or timed out
                failure = type(exc).__name__
            except Exception as exc:  # an answer of the wrong shape: asking again won't help
                failure = type(exc).__name__
                break
            else:
                if not content or not content.strip():
                    failure = "an empty answer"
                    break
                return content, answered[:200]
        log.warning(
            "the LLM at %s gave no answer (%s); the built-in analysis stands", self._host, failure
        )
        return None


def _render(evidence: Mapping[str, Any]) -> str:
    """``evidence`` as JSON, every string scrubbed and shortened, lists cut to their first
    items, short enough for any model's context."""
    for limit in (2000, 500, 120):
        text = json.dumps(_prepared(evidence, limit), ensure_ascii=False, default=str)
        if len(text) <= _MAX_EVIDENCE_CHARS:
            break
    return text[:_MAX_EVIDENCE_CHARS]


def _prepared(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        text = scrub(value)
        return text if len(text) <= limit else text[:limit] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        items = list(value.items())[:_MAX_ITEMS]
        return {scrub(str(key)): _prepared(item, limit) for key, item in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [_prepared(item, limit) for item in list(value)[:_MAX_ITEMS]]
    return _prepared(str(value), limit)


def _capped(text: str, limit: int = MAX_EXPLANATION_CHARS) -> str:
    """``text`` cut to ``limit`` characters, at the end of a sentence when one is near."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sentence = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence >= limit // 2:
        return cut[: sentence + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + "…" if " " in cut else cut + "…"


def _split_answer(text: str) -> tuple[str, str]:
    """The diff of a fix answer, and the prose around it (the summary)."""
    fenced = next((m for m in _FENCED_DIFF.finditer(text) if "+++ " in m.group(1)), None)
    if fenced is not None:
        return fenced.group(1), text[: fenced.start()] + " " + text[fenced.end() :]
    start = re.search(r"^(?:diff --git |--- )", text, re.M)
    if start is None:
        return text, ""
    return text[start.start() :], text[: start.start()]
