"""A local Azure AI Search service: the REST shapes azure-search-documents speaks, over plain HTTP.

Faithful where the adapter depends on it: the ``api-key`` header; index create, update (existing
fields cannot change), get, list and delete, with the service's error JSON; ``docs/search.index``
with upload / merge / mergeOrUpload / delete, 200 when every key succeeded else 207, per-key 201 or
200, key and field validation (a malformed value rejects the whole request, as the service does),
413 above the body limit or 1,000 actions, 400 for none; ``docs/search.post.search`` with BM25 over the
searchable fields (tokens as the standard analyzer's UAX#29 word breaks make them; simple query syntax
with ``\\`` escapes), ``searchMode``, exhaustive cosine kNN vector queries (score 1 / (1 + distance)),
hybrid = Reciprocal Rank Fusion (k = 60), an OData ``$filter`` subset (``eq ne gt ge lt le and or not``,
parentheses, ``search.in``, ``any``/``all`` lambdas), ``orderby``, ``select``, ``skip``, ``top``,
``count`` and a deterministic stand-in for the semantic ranker (``@search.rerankerScore``);
``docs/$count`` and ``docs('key')``. Filters, sorts and selects check the schema's attributes.

Not implemented (a request using them gets a 400 saying so): facets, highlights, answers, captions,
scoring profiles, vectorizers, simple-syntax operators (escaped, they are plain text); text is not
stemmed; results are not paged past ``top`` (at most 1,000).

Tests control faults from Python (``fail_next``, ``delay_next``, ``fail_keys``, ``max_body_bytes``) and
read the request log (``requests``). Standalone: ``python -m tests.emulators.search_server --port 8894
--api-key KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import threading
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
MAX_BATCH_ACTIONS = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TOP = 1000
MAX_DIMENSIONS = 4096
RRF_K = 60
TEXT_RECALL = 1000  # how many keyword hits a hybrid query fuses (the service's maxTextRecallSize default)
SEMANTIC_DEPTH = 50  # the semantic ranker reranks (and returns) at most the first 50 results
BM25_K1, BM25_B = 1.2, 0.75
_KEY = re.compile(r"[A-Za-z0-9_\-=]{1,1024}")
_OPERATORS = '+|"()~*'  # the simple query syntax's operators (``-`` too, where it opens a term)
# Han ideographs (with extensions and compatibility forms) and Hiragana: a token per character.
_IDEOGRAPHIC = ((0x3040, 0x309F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))
_VECTOR_TYPE = "Collection(Edm.Single)"
_FLAGS = ("key", "searchable", "filterable", "sortable", "facetable")
_IMMUTABLE = ("type", *_FLAGS, "dimensions", "vectorSearchProfile", "analyzer")
_SEARCH_OPTIONS = {
    "count", "filter", "orderby", "queryType", "search", "searchFields", "searchMode", "select", "skip", "top",
    "semanticConfiguration", "semanticErrorHandling", "semanticMaxWaitInMilliseconds", "semanticQuery",
    "vectorQueries", "vectorFilterMode", "sessionId", "scoringStatistics", "minimumCoverage",
}  # fmt: skip
_UNSUPPORTED = {"facets", "highlight", "highlightPreTag", "highlightPostTag", "answers", "captions", "scoringProfile",
                "scoringParameters", "debug", "queryRewrites", "speller", "queryLanguage", "hybridSearch"}  # fmt: skip


class ServiceError(Exception):
    """An error response in the service's shape: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, message: str, code: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json; odata.metadata=none; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestRecord:
    """One request the service saw: what tests assert on (``docs`` counts index actions)."""

    method: str
    path: str
    body_bytes: int
    payload: Any = None  # the JSON body, parsed
    docs: int | None = None
    status: int | None = None


@dataclass
class _RequestFault:
    remaining: int
    status: int | None  # None: only delay
    delay_s: float = 0.0
    path: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _KeyFault:
    status: int
    keys: frozenset[str]
    remaining: dict[str, int | None]
    message: str


def words(text: str) -> list[str]:
    """The lowercase tokens of ``text``: the standard analyzer (Lucene's StandardTokenizer, UAX#29 word breaks).

    An approximation of the rules that matter for queries: combining marks (Indic vowel signs, Arabic
    harakat) stay inside their word; ``'`` ``.`` ``:`` between letters and ``'`` ``.`` ``,`` ``;``
    between digits do not break (``don't``, ``3.14``); ``_`` joins; each Han ideograph and Hiragana
    character is a token of its own. No stop words, no stemming.
    """
    lowered = text.lower()
    tokens: list[str] = []
    current: list[str] = []
    for at, ch in enumerate(lowered):
        if _ideographic(ch):
            tokens.extend(("".join(current), ch))
            current = []
        elif _word_char(ch) or (current and at + 1 < len(lowered) and _joins(current[-1], ch, lowered[at + 1])):
            current.append(ch)
        else:
            tokens.append("".join(current))
            current = []
    tokens.append("".join(current))
    return [token for token in tokens if any(ch.isalnum() for ch in token)]


def query_terms(text: str) -> list[str]:
    """The analyzed terms of a simple-syntax ``search`` text: ``\\`` escapes the next character.

    Operators (``+ | " ( ) ~ *``, and ``-`` opening a term) are not implemented: a 400 says so, so a
    caller that lets them through unescaped is caught here rather than misread by the service.
    """
    terms: list[str] = []
    current: list[str] = []
    escaped = False
    for at, ch in enumerate(text):
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            terms.append("".join(current))
            current = []
        elif ch in _OPERATORS or (ch == "-" and not current):
            raise ServiceError(
                400,
                f"The simple query operator '{ch}' (position {at}) is not implemented by the local search server; "
                "escape it with a backslash.",
            )
        else:
            current.append(ch)
    terms.append("".join(current))
    return [word for term in terms for word in words(term)]


def _word_char(ch: str) -> bool:
    return ch.isalnum() or unicodedata.category(ch)[0] == "M" or unicodedata.category(ch) == "Pc"


def _joins(before: str, ch: str, after: str) -> bool:
    """UAX#29 WB6/WB7 (MidLetter, MidNumLet between letters) and WB11/WB12 (MidNum between digits)."""
    if not _word_char(after) or _ideographic(after):
        return False
    if before.isdigit() and after.isdigit():
        return ch in "'\u2019.,;"
    return not before.isdigit() and not after.isdigit() and ch in "'\u2019.:\u00b7"


def _ideographic(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _IDEOGRAPHIC)


# --------------------------------------------------------------------------- OData $filter and $orderby

_TOKEN = re.compile(
    r"""\s*(?:(?P<string>'(?:[^']|'')*')
        |(?P<datetime>\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d))
        |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
        |(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
        |(?P<punct>[(),:/]))""",
    re.VERBOSE,
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}
Env = Mapping[str, Any]
Predicate = Callable[[Env], bool]
Operand = Callable[[Env], Any]
Handler = Callable[[re.Match[str], Any, "RequestRecord"], "Response"]


class FilterParser:
    """Compiles an OData ``$filter`` (the subset in the module docstring) to a predicate over a document."""

    def __init__(self, text: str, fields: Mapping[str, Mapping[str, Any]]) -> None:
        self._fields = fields
        self._tokens = self._tokenize(text)
        self._at = 0
        self._variables: set[str] = set()

    def parse(self) -> Predicate:
        predicate = self._or()
        if self._at != len(self._tokens):
            self._fail(f"unexpected '{self._tokens[self._at][1]}'")
        return predicate

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens, at = [], 0
        while at < len(text.rstrip()):
            match = _TOKEN.match(text, at)
            if match is None or match.lastgroup is None:
                raise ServiceError(400, f"Invalid expression: Syntax error at position {at} in '{text}'.")
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
            at = match.end()
        return tokens

    def _fail(self, what: str) -> None:
        raise ServiceError(400, f"Invalid expression: {what}.")

    def _peek(self, offset: int = 0) -> str | None:
        at = self._at + offset
        return self._tokens[at][1] if at < len(self._tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self._at >= len(self._tokens):
            self._fail("unexpected end of expression")
        token = self._tokens[self._at]
        if expected is not None and token[1] != expected:
            self._fail(f"expected '{expected}' but found '{token[1]}'")
        self._at += 1
        return token

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek() == "or":
            self._take()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda env: any(part(env) for part in parts))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._peek() == "and":
            self._take()
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda env: all(part(env) for part in parts))

    def _not(self) -> Predicate:
        if self._peek() == "not":
            self._take()
            inner = self._not()
            return lambda env: not inner(env)
        return self._primary()

    def _primary(self) -> Predicate:
        if self._peek() == "(":
            self._take()
            inner = self._or()
            self._take(")")
            return inner
        if self._peek() == "search.in":
            return self._search_in()
        if self._peek() in ("true", "false") and self._peek(1) not in _COMPARE:
            value = self._take()[1] == "true"
            return lambda env: value
        if self._at >= len(self._tokens):
            self._fail("unexpected end of expression")
        if self._tokens[self._at][0] == "name" and self._peek(1) == "/":
            return self._lambda()
        left = self._operand()
        operator = self._take()[1]
        if operator not in _COMPARE:
            self._fail(f"expected a comparison operator but found '{operator}'")
        right = self._operand()
        compare = _COMPARE[operator]
        return lambda env: compare(*_comparable(left(env), right(env)))

    def _search_in(self) -> Predicate:
        self._take()
        self._take("(")
        value = self._field_operand(self._take()[1])
        self._take(",")
        kind, raw = self._take()
        if kind != "string":
            self._fail("search.in expects a string of values")
        delimiters = " ,"
        if self._peek() == ",":
            self._take()
            kind, raw_delimiters = self._take()
            if kind != "string":
                self._fail("search.in expects a string of delimiters")
            delimiters = _unquote(raw_delimiters)
        self._take(")")
        allowed = {part for part in re.split("[" + re.escape(delimiters) + "]", _unquote(raw)) if part}
        return lambda env: value(env) in allowed

    def _lambda(self) -> Predicate:
        collection = self._field(self._take()[1], collection=True)
        self._take("/")
        quantifier = self._take()[1]
        if quantifier not in ("any", "all"):
            self._fail(f"expected any or all but found '{quantifier}'")
        self._take("(")
        if self._peek() == ")":
            self._take()
            return lambda env: bool(collection(env))
        variable = self._take()[1]
        self._take(":")
        self._variables.add(variable)
        body = self._or()
        self._variables.discard(variable)
        self._take(")")
        test = any if quantifier == "any" else all
        return lambda env: test(body({**env, variable: item}) for item in collection(env) or ())

    def _operand(self) -> Operand:
        kind, raw = self._take()
        if kind == "string":
            text = _unquote(raw)
            return lambda env: text
        if kind == "number":
            number = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
            return lambda env: number
        if kind == "datetime":
            moment = _parse_datetime(raw)
            return lambda env: moment
        if raw in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[raw]
            return lambda env: constant
        if kind == "name":
            return self._field_operand(raw)
        self._fail(f"unexpected '{raw}'")
        raise AssertionError  # unreachable: _fail raises

    def _field_operand(self, name: str) -> Operand:
        return self._field(name, collection=False)

    def _field(self, name: str, *, collection: bool) -> Operand:
        if name in self._variables:
            return lambda env: env[name]
        definition = self._fields.get(name)
        if definition is None:
            raise ServiceError(
                400, f"Invalid expression: Could not find a property named '{name}' on type 'search.document'."
            )
        if not definition.get("filterable"):
            raise ServiceError(400, f"Invalid expression: The field '{name}' is not filterable.")
        if definition["type"].startswith("Collection(") != collection:
            usage = "only inside any/all" if not collection else "only in comparisons, not with any/all"
            raise ServiceError(400, f"Invalid expression: the field '{name}' can be used {usage}.")
        return lambda env: env.get(name)


def _unquote(raw: str) -> str:
    return raw[1:-1].replace("''", "'")


def _parse_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise ServiceError(400, f"'{text}' is not a valid Edm.DateTimeOffset value.") from error
    if moment.tzinfo is None:
        raise ServiceError(400, f"'{text}' has no time zone offset.")
    return moment


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    """Stored date-times are ISO text; compare them as moments when the other side is a moment."""
    if isinstance(left, datetime) and isinstance(right, str):
        return left, _parse_datetime(right)
    if isinstance(right, datetime) and isinstance(left, str):
        return _parse_datetime(left), right
    return left, right


def sort_key_order(orderby: str, fields: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """``$orderby`` as ``(field or "search.score()", descending)`` pairs, checked against the schema."""
    order = []
    for clause in (part.strip() for part in orderby.split(",") if part.strip()):
        name, _, direction = clause.partition(" ")
        direction = direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise ServiceError(400, f"Invalid expression: '{clause}' is not a valid $orderby clause.")
        if name != "search.score()":
            if name not in fields:
                raise ServiceError(400, f"Invalid expression: Could not find a property named '{name}'.")
            if not fields[name].get("sortable"):
                raise ServiceError(400, f"Invalid expression: The field '{name}' is not sortable.")
        order.append((name, direction == "desc"))
    return order


# --------------------------------------------------------------------------- one index


class _Index:
    """An index definition and its documents (guarded by the service's lock)."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.etag = 1
        self.documents: dict[str, dict[str, Any]] = {}

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in self.definition["fields"]}

    @property
    def key(self) -> str:
        return str(next(f["name"] for f in self.definition["fields"] if f.get("key")))

    def representation(self) -> dict[str, Any]:
        return {"@odata.etag": f'"0x{self.etag:X}"', **self.definition}

    # ------------------------------------------------------------------ writes

    def apply(self, actions: list[Any], injected: Callable[[str], tuple[int, str] | None]) -> list[dict[str, Any]]:
        """Validate the whole batch first (a malformed value rejects the request), then act per key."""
        key_field, fields = self.key, self.fields
        checked = [self._check_action(n, action, key_field, fields) for n, action in enumerate(actions)]
        results = []
        for kind, key, document in checked:
            outcome: tuple[int, str] | None = None
            if not _KEY.fullmatch(key):
                outcome = (
                    400,
                    f"Invalid document key: '{key}'. Keys can only contain letters, digits, underscore "
                    "(_), dash (-), or equal sign (=).",
                )
            else:
                outcome = injected(key) or self._act(kind, key, document)
            status, message = outcome
            results.append({"key": key, "status": status < 300, "errorMessage": message or None, "statusCode": status})
        return results

    def _act(self, kind: str, key: str, document: dict[str, Any]) -> tuple[int, str]:
        existing = self.documents.get(key)
        if kind == "delete":
            self.documents.pop(key, None)
            return 200, ""
        if kind == "merge" and existing is None:
            return 404, "Document not found."
        if kind in ("merge", "mergeOrUpload") and existing is not None:
            existing.update(document)
            return 200, ""
        self.documents[key] = {**dict.fromkeys(self.fields), **document}
        return (201 if existing is None else 200), ""

    def _check_action(
        self, number: int, action: Any, key_field: str, fields: Mapping[str, Mapping[str, Any]]
    ) -> tuple[str, str, dict[str, Any]]:
        if not isinstance(action, dict):
            raise ServiceError(400, f"The request is invalid. Details: actions : {number}: not an object.")
        kind = action.get("@search.action", "upload")
        if kind not in ("upload", "merge", "mergeOrUpload", "delete"):
            raise ServiceError(400, f"The request is invalid. Details: '{kind}' is not a valid index action.")
        key = action.get(key_field)
        if not isinstance(key, str) or not key:
            raise ServiceError(
                400, f"The request is invalid. Details: actions : {number}: Document key cannot be missing or empty."
            )
        document = {}
        for name, value in action.items():
            if name.startswith("@search."):
                continue
            if name not in fields:
                raise ServiceError(
                    400,
                    f"The request is invalid. Details: The property '{name}' does not exist on "
                    "type 'search.documentFields'. Make sure to only use property names that are "
                    "defined by the type.",
                )
            document[name] = _checked_value(fields[name], value)
        return kind, key, document

    # ------------------------------------------------------------------ search

    def search(self, body: Mapping[str, Any]) -> dict[str, Any]:
        fields = self.fields
        for name in body:
            if name in _UNSUPPORTED and body[name] not in (None, [], ""):
                raise ServiceError(400, f"'{name}' is not implemented by the local search server.")
            if name not in _SEARCH_OPTIONS | _UNSUPPORTED:
                raise ServiceError(400, f"Invalid JSON. The property '{name}' is not a valid search parameter.")
        matches: Predicate = FilterParser(body["filter"], fields).parse() if body.get("filter") else (lambda env: True)
        post_filter = body.get("vectorFilterMode") == "postFilter"
        pool = [doc for doc in self.documents.values() if post_filter or matches(doc)]
        rankings = self._vector_rankings(body.get("vectorQueries") or [], pool, fields)
        if post_filter:
            rankings = [
                [(key, score) for key, score in ranking if matches(self.documents[key])] for ranking in rankings
            ]
            pool = [doc for doc in pool if matches(doc)]
        text = body.get("search")
        if text not in (None, "", "*"):
            depth = TEXT_RECALL if rankings else None
            rankings.insert(0, self._keyword_ranking(str(text), body, pool, fields)[:depth])
        elif not rankings:
            rankings = [sorted(((doc[self.key], 1.0) for doc in pool), key=lambda item: item[0])]
        scored = rankings[0] if len(rankings) == 1 else _fuse(rankings)
        if body.get("orderby"):
            scored = self._ordered(scored, sort_key_order(str(body["orderby"]), fields))
        total = len(scored)
        reranked: dict[str, float] = {}
        if body.get("queryType") == "semantic":
            scored, reranked = self._semantic(scored, body, text)
        skip = int(body.get("skip") or 0)
        top = min(int(body["top"]), MAX_TOP) if body.get("top") is not None else 50  # the service's default
        if skip < 0 or top < 0:
            raise ServiceError(400, "skip and top must not be negative.")
        selected = self._selection(body.get("select"), fields)
        rows = []
        for key, score in scored[skip : skip + top]:
            document = self.documents[key]
            row: dict[str, Any] = {"@search.score": score}
            if key in reranked:
                row["@search.rerankerScore"] = reranked[key]
            row.update({name: document.get(name) for name in selected})
            rows.append(row)
        answer: dict[str, Any] = {"value": rows}
        if body.get("count"):
            answer["@odata.count"] = total
        return answer

    def _keyword_ranking(
        self, text: str, body: Mapping[str, Any], pool: list[dict[str, Any]], fields: Mapping[str, Mapping[str, Any]]
    ) -> list[tuple[str, float]]:
        searchable = [name for name, f in fields.items() if f.get("searchable") and f["type"] != _VECTOR_TYPE]
        if body.get("searchFields"):
            wanted = [name.strip() for name in str(body["searchFields"]).split(",")]
            for name in wanted:
                if name not in searchable:
                    raise ServiceError(400, f"The field '{name}' in searchFields is not searchable.")
            searchable = wanted
        terms = list(dict.fromkeys(query_terms(text)))
        if not terms:
            return []
        every = body.get("searchMode") == "all"
        all_documents = list(self.documents.values())  # statistics over the whole index, like the service
        scores: dict[str, float] = {}
        for name in searchable:
            lengths = {doc[self.key]: len(_field_words(doc.get(name))) for doc in all_documents}
            average = (sum(lengths.values()) / len(lengths)) if lengths else 0.0
            counts = {doc[self.key]: Counter(_field_words(doc.get(name))) for doc in pool}
            for term in terms:
                having = sum(1 for doc in all_documents if term in _field_words(doc.get(name)))
                idf = math.log(1 + (len(all_documents) - having + 0.5) / (having + 0.5))
                for key, counter in counts.items():
                    tf = counter.get(term, 0)
                    if tf:
                        norm = 1 - BM25_B + BM25_B * (lengths[key] / average if average else 0.0)
                        scores[key] = scores.get(key, 0.0) + idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * norm)
        if every:
            scores = {
                key: score
                for key, score in scores.items()
                if all(any(term in _field_words(self.documents[key].get(n)) for n in searchable) for term in terms)
            }
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    def _vector_rankings(
        self, queries: list[Any], pool: list[dict[str, Any]], fields: Mapping[str, Mapping[str, Any]]
    ) -> list[list[tuple[str, float]]]:
        rankings = []
        for query in queries:
            if not isinstance(query, dict) or query.get("kind") != "vector":
                raise ServiceError(
                    400, "Only vector queries of kind 'vector' are supported by the local search server."
                )
            vector = query.get("vector")
            k = int(query.get("k") or 50)
            for name in (part.strip() for part in str(query.get("fields") or "").split(",")):
                definition = fields.get(name)
                if definition is None or definition["type"] != _VECTOR_TYPE or not definition.get("searchable"):
                    raise ServiceError(400, f"The field '{name}' is not a searchable vector field.")
                if not isinstance(vector, list) or len(vector) != definition["dimensions"]:
                    size = len(vector) if isinstance(vector, list) else 0
                    raise ServiceError(
                        400,
                        f"The vector field '{name}' expects {definition['dimensions']} dimensions, "
                        f"but the query vector has {size}.",
                    )
                scored = [
                    (doc[self.key], 1.0 / (2.0 - _cosine(vector, doc[name])))
                    for doc in pool
                    if doc.get(name) is not None
                ]
                rankings.append(sorted(scored, key=lambda item: (-item[1], item[0]))[:k])
        return rankings

    def _ordered(self, scored: list[tuple[str, float]], order: list[tuple[str, bool]]) -> list[tuple[str, float]]:
        result = sorted(scored, key=lambda item: (-item[1], item[0]))
        for name, descending in reversed(order):
            if name == "search.score()":
                result.sort(key=lambda item: item[1], reverse=descending)
            else:
                result.sort(key=lambda item: _sortable(self.documents[item[0]].get(name)), reverse=descending)
        return result

    def _semantic(
        self, scored: list[tuple[str, float]], body: Mapping[str, Any], text: Any
    ) -> tuple[list[tuple[str, float]], dict[str, float]]:
        semantic = self.definition.get("semantic") or {}
        name = body.get("semanticConfiguration") or semantic.get("defaultConfiguration")
        configuration = next((c for c in semantic.get("configurations") or [] if c["name"] == name), None)
        if configuration is None:
            raise ServiceError(400, f"Unknown semantic configuration '{name}'.")
        query = words(str(body["semanticQuery"])) if body.get("semanticQuery") else query_terms(str(text or ""))
        if not query:
            raise ServiceError(400, "Semantic ranking needs search text or a semanticQuery.")
        prioritized = configuration.get("prioritizedFields") or {}
        title = [(prioritized.get("titleField") or {}).get("fieldName")]
        content = [f["fieldName"] for f in prioritized.get("prioritizedContentFields") or []]
        keywords = [f["fieldName"] for f in prioritized.get("prioritizedKeywordsFields") or []]

        def coverage(key: str, names: list[str | None]) -> float:
            found = set()
            for field_name in names:
                if field_name:
                    found.update(_field_words(self.documents[key].get(field_name)))
            return sum(1 for term in set(query) if term in found) / len(set(query))

        # Deterministic stand-in for the model: query coverage of content (3), title and keywords (0.5 each).
        reranked = {
            key: round(3 * coverage(key, content) + 0.5 * coverage(key, title) + 0.5 * coverage(key, keywords), 6)
            for key, _ in scored[:SEMANTIC_DEPTH]
        }
        order = sorted(scored[:SEMANTIC_DEPTH], key=lambda item: -reranked[item[0]])  # stable: ties keep their rank
        return order, reranked

    def _selection(self, select: Any, fields: Mapping[str, Mapping[str, Any]]) -> list[str]:
        if not select or str(select).strip() == "*":
            return [name for name, f in fields.items() if f.get("retrievable", True)]
        chosen = [name.strip() for name in str(select).split(",")]
        for name in chosen:
            if name not in fields:
                raise ServiceError(400, f"Invalid expression: Could not find a property named '{name}'.")
            if not fields[name].get("retrievable", True):
                raise ServiceError(400, f"The field '{name}' is not retrievable and cannot be selected.")
        return chosen


def _field_words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [word for item in value for word in words(str(item))]
    return words(str(value))


def _cosine(left: list[float], right: list[float]) -> float:
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    norms = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norms if norms > 0 else 0.0


def _fuse(rankings: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (key, _) in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value)  # nulls first when ascending


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any, bits: int = 64) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def _is_datetime(value: Any) -> bool:
    try:
        return isinstance(value, str) and _parse_datetime(value) is not None
    except ServiceError:
        return False


_SCALARS: dict[str, Callable[[Any], bool]] = {
    "Edm.String": lambda value: isinstance(value, str),
    "Edm.Int32": lambda value: _is_int(value, 32),
    "Edm.Int64": _is_int,
    "Edm.Double": _is_number,
    "Edm.Boolean": lambda value: isinstance(value, bool),
    "Edm.DateTimeOffset": _is_datetime,
}


def _invalid(details: str) -> ServiceError:
    return ServiceError(400, f"The request is invalid. Details: {details}")


def _checked_value(definition: Mapping[str, Any], value: Any) -> Any:
    """``value`` as stored for the field, or a whole-request 400 when the service would refuse it."""
    name, kind = definition["name"], definition["type"]
    if value is None:
        return None
    refused = _invalid(f"Cannot convert the literal '{str(value)[:60]}' to the expected type '{kind}' of '{name}'.")
    if kind.startswith("Collection("):
        if not isinstance(value, list):
            raise refused
        if kind == _VECTOR_TYPE and len(value) != definition["dimensions"]:
            raise _invalid(
                f"The vector field '{name}' must have dimensionality of {definition['dimensions']}, "
                f"but has length of {len(value)}."
            )
        return [_checked_value({"name": name, "type": kind[len("Collection(") : -1]}, item) for item in value]
    if not _SCALARS.get(kind, lambda _: False)(value):
        raise refused
    if kind == "Edm.DateTimeOffset":
        return _parse_datetime(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return float(value) if kind in ("Edm.Double", "Edm.Single") else value


_SCALARS["Edm.Single"] = _is_number
_HNSW_DEFAULTS = {"m": 4, "efConstruction": 400, "efSearch": 500, "metric": "cosine"}


def _normalized_definition(name: str, body: Any) -> dict[str, Any]:
    """The definition as the service stores it (defaults explicit), or a 400 naming the problem."""
    if not isinstance(body, dict) or body.get("name") != name:
        raise _invalid(f"the index name in the body must be '{name}'.")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", name) or "--" in name:
        raise _invalid(f"Index name '{name}' is invalid: lowercase letters, digits or dashes only.")
    fields = [_normalized_field(raw, _vector_profiles(body)) for raw in body.get("fields") or []]
    names = [f.get("name") for f in fields]
    if len(set(names)) != len(names):
        raise _invalid("field names must be unique.")
    keys = [f for f in fields if f["key"]]
    if len(keys) != 1 or keys[0].get("type") != "Edm.String":
        raise _invalid(f"index : Found {len(keys)} key fields in index '{name}'. Each index must have exactly one key.")
    for configuration in (body.get("semantic") or {}).get("configurations") or []:
        prioritized = configuration.get("prioritizedFields") or {}
        used = [(prioritized.get("titleField") or {}).get("fieldName")] + [
            f.get("fieldName")
            for part in ("prioritizedContentFields", "prioritizedKeywordsFields")
            for f in prioritized.get(part) or []
        ]
        unknown = [field_name for field_name in used if field_name and field_name not in names]
        if unknown:
            raise _invalid(f"Semantic configuration '{configuration.get('name')}' names unknown field '{unknown[0]}'.")
    return {**{k: v for k, v in body.items() if not k.startswith("@odata.")}, "fields": fields}


def _vector_profiles(body: dict[str, Any]) -> set[str]:
    """The vector profile names, once each profile's algorithm is checked (HNSW defaults made explicit)."""
    vector = body.get("vectorSearch") or {}
    algorithms = {a.get("name"): a for a in vector.get("algorithms") or []}
    for algorithm in algorithms.values():
        if algorithm.get("kind") == "hnsw":
            algorithm["hnswParameters"] = {**_HNSW_DEFAULTS, **(algorithm.get("hnswParameters") or {})}
    profiles = vector.get("profiles") or []
    for profile in profiles:
        if profile.get("algorithm") not in algorithms:
            raise _invalid(f"Vector profile '{profile.get('name')}' names an unknown algorithm.")
    return {profile.get("name") for profile in profiles}


def _normalized_field(raw: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    normalized: dict[str, Any] = {flag: bool(raw.get(flag, False)) for flag in _FLAGS}
    normalized.update({k: v for k, v in raw.items() if k not in _FLAGS and k != "hidden"})
    normalized["retrievable"] = bool(raw.get("retrievable", not raw.get("hidden", False)))
    if normalized.get("type") == _VECTOR_TYPE:
        dimensions = normalized.get("dimensions")
        if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
            raise _invalid(f"Vector field '{raw.get('name')}' needs dimensions between 1 and {MAX_DIMENSIONS}.")
        if normalized.get("vectorSearchProfile") not in profiles:
            raise _invalid(f"Vector field '{raw.get('name')}' names an unknown vector search profile.")
    return normalized


# --------------------------------------------------------------------------- the service


class SearchService:
    """The service's state and request handling, independent of HTTP (thread-safe)."""

    def __init__(self, api_key: str, *, service_name: str = "local-search") -> None:
        self.api_key = api_key
        self.service_name = service_name
        self.max_body_bytes = MAX_BODY_BYTES
        self._lock = threading.Lock()
        self._indexes: dict[str, _Index] = {}
        self._faults: list[_RequestFault] = []
        self._key_faults: list[_KeyFault] = []
        self._log: deque[RequestRecord] = deque(maxlen=10_000)  # bounded: a standalone server runs for hours
        self._routes = self._route_table()

    # ------------------------------------------------------------------ control, for tests

    def fail_next(
        self,
        times: int = 1,
        status: int = 503,
        *,
        retry_after: str | None = None,
        retry_after_ms: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``times`` requests (whose path contains ``path``, if given) fail with ``status``."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        with self._lock:
            self._faults.append(_RequestFault(times, status, path=path, headers=headers))

    def delay_next(self, times: int, seconds: float, *, path: str | None = None) -> None:
        """The next ``times`` requests wait ``seconds`` before they are served (then served normally)."""
        with self._lock:
            self._faults.append(_RequestFault(times, None, delay_s=seconds, path=path))

    def fail_keys(self, status: int, keys: Iterable[str], times: int | None = 1, message: str = "") -> None:
        """Index actions on ``keys`` fail with ``status`` (in a 207), ``times`` times per key (None: always)."""
        chosen = frozenset(keys)
        text = message or f"Injected failure ({status})."
        with self._lock:
            self._key_faults.append(_KeyFault(status, chosen, dict.fromkeys(chosen, times), text))

    def reset(self) -> None:
        """Forget faults, the request log and the body limit (indexes and documents stay)."""
        with self._lock:
            self._faults.clear()
            self._key_faults.clear()
            self._log.clear()
            self.max_body_bytes = MAX_BODY_BYTES

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        """A copy of the documents of ``index`` by key."""
        with self._lock:
            return {key: dict(doc) for key, doc in self._indexes[index].documents.items()}

    def index_names(self) -> list[str]:
        with self._lock:
            return sorted(self._indexes)

    # ------------------------------------------------------------------ requests

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(target)
        path = unquote(parts.path)
        record = RequestRecord(method, path, len(body))
        with self._lock:
            self._log.append(record)
        try:
            self._admit(path, parse_qs(parts.query), headers, body)
            response = self._route(method, path, body, record)
        except ServiceError as error:
            payload = {"error": {"code": error.code, "message": error.message}}
            response = Response(error.status, json.dumps(payload).encode(), headers=error.headers)
        record.status = response.status
        return response

    def _admit(self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes) -> None:
        """Authentication, injected faults, the api-version and the body limit, in the service's order."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if "api-key" not in lowered:
            raise ServiceError(401, "Authentication is required: send the api-key header.")
        if lowered["api-key"] != self.api_key:
            raise ServiceError(403, "The api-key is invalid.")
        self._injected_fault(path)
        if not query.get("api-version"):
            raise ServiceError(400, "The api-version query parameter (?api-version=) is required for all requests.")
        if len(body) > self.max_body_bytes:
            raise ServiceError(413, "The request is too large.", code="RequestEntityTooLarge")

    def _route(self, method: str, path: str, body: bytes, record: RequestRecord) -> Response:
        found = [
            (verb, match, handler) for verb, pattern, handler in self._routes if (match := pattern.fullmatch(path))
        ]
        if not found:
            raise ServiceError(404, f"The resource '{path}' was not found.")
        for verb, match, handler in found:
            if verb == method:
                record.payload = _json(body) if body else None
                return handler(match, record.payload, record)
        raise ServiceError(405, f"{method} is not supported on {path}.")

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        index, docs = r"/indexes\('(?P<index>[^']*)'\)", r"/indexes\('(?P<index>[^']*)'\)/docs"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/indexes", self._list_indexes),
            ("POST", "/indexes", self._create_index),
            ("PUT", index, self._put_index),
            ("GET", index, self._get_index),
            ("DELETE", index, self._delete_index),
            ("POST", docs + r"/search\.index", self._index_documents),
            ("POST", docs + r"/search\.post\.search", self._search),
            ("GET", docs + r"/\$count", self._count),
            ("GET", docs + r"\('(?P<key>(?:[^']|'')*)'\)", self._lookup),
        ]
        return [(verb, re.compile(pattern), handler) for verb, pattern, handler in table]

    def _list_indexes(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        with self._lock:
            return _ok({"value": [index.representation() for index in self._indexes.values()]})

    def _create_index(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        name = str(payload.get("name")) if isinstance(payload, dict) else ""
        return self._store_index(name, payload, create_only=True)

    def _put_index(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        return self._store_index(match["index"], payload, create_only=False)

    def _get_index(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        with self._lock:
            return _ok(self._index(match["index"]).representation())

    def _delete_index(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        with self._lock:
            self._index(match["index"])
            del self._indexes[match["index"]]
        return Response(204)

    def _search(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        if not isinstance(payload, dict):
            raise ServiceError(400, "The request body must be a JSON object.")
        with self._lock:
            return _ok(self._index(match["index"]).search(payload))

    def _count(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        with self._lock:
            count = len(self._index(match["index"]).documents)
        return Response(200, str(count).encode(), content_type="text/plain")

    def _lookup(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        key = match["key"].replace("''", "'")
        with self._lock:
            document = self._index(match["index"]).documents.get(key)
        if document is None:
            raise ServiceError(404, f"Document with key '{key}' was not found.")
        return _ok(document)

    def _injected_fault(self, path: str) -> None:
        with self._lock:
            fault = next((f for f in self._faults if f.remaining > 0 and (f.path is None or f.path in path)), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is None:
            return
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.status is not None:
            try:
                phrase = HTTPStatus(fault.status).phrase
            except ValueError:
                phrase = "fault"
            raise ServiceError(fault.status, f"Injected failure: {phrase}.", headers=fault.headers)

    def _index(self, name: str) -> _Index:
        index = self._indexes.get(name)
        if index is None:
            raise ServiceError(404, f"The index '{name}' for service '{self.service_name}' was not found.")
        return index

    def _store_index(self, name: str, payload: Any, *, create_only: bool) -> Response:
        definition = _normalized_definition(name, payload)
        with self._lock:
            existing = self._indexes.get(name)
            if existing is None:
                self._indexes[name] = _Index(definition)
                return _ok(self._indexes[name].representation(), status=201)
            if create_only:
                raise ServiceError(409, f"Cannot create index '{name}' because it already exists.")
            new_fields = {f["name"]: f for f in definition["fields"]}
            for old in existing.definition["fields"]:
                new = new_fields.get(old["name"])
                if new is None:
                    raise ServiceError(
                        400,
                        f"The request is invalid. Details: Existing field '{old['name']}' "
                        "cannot be removed from the index.",
                    )
                changed = [attribute for attribute in _IMMUTABLE if old.get(attribute) != new.get(attribute)]
                if changed:
                    raise ServiceError(
                        400,
                        f"The request is invalid. Details: Existing field '{old['name']}' cannot "
                        f"be changed ({', '.join(changed)}).",
                    )
            existing.definition = definition
            existing.etag += 1
            return _ok(existing.representation())

    def _index_documents(self, match: re.Match[str], payload: Any, record: RequestRecord) -> Response:
        name = match["index"]
        actions = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(actions, list):
            raise ServiceError(400, "The request is invalid. Details: actions : a 'value' array is required.")
        record.docs = len(actions)
        if not actions:
            raise ServiceError(
                400, "The request is invalid. Details: actions : No indexing actions found in the request."
            )
        if len(actions) > MAX_BATCH_ACTIONS:
            raise ServiceError(413, f"The batch holds {len(actions)} actions; at most {MAX_BATCH_ACTIONS} are allowed.")
        with self._lock:
            results = self._index(name).apply(actions, self._key_fault)
        status = 200 if all(result["status"] for result in results) else 207
        return _ok({"value": results}, status=status)

    def _key_fault(self, key: str) -> tuple[int, str] | None:
        """A pending per-key failure for ``key`` (called with the lock held)."""
        for fault in self._key_faults:
            remaining = fault.remaining.get(key, 0)
            if key in fault.keys and (remaining is None or remaining > 0):
                if remaining is not None:
                    fault.remaining[key] = remaining - 1
                return fault.status, fault.message
        return None


def _json(body: bytes) -> Any:
    def refuse(token: str) -> None:
        raise ServiceError(400, f"The request is invalid. Details: '{token}' is not a valid JSON value.")

    try:
        return json.loads(body, parse_constant=refuse)
    except ValueError as error:
        raise ServiceError(400, f"The request is invalid. Details: malformed JSON ({error}).") from error


def _ok(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode())


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _HttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.service.handle(self.command, self.path, dict(self.headers.items()), body)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.status != 204:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("request-id", f"local-{id(response):x}")
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test); nothing to tell it

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is in SearchService.requests


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a delayed request must not hold up stop()

    def __init__(self, port: int, service: SearchService) -> None:
        super().__init__((HOST, port), _Handler)
        self.service = service


class SearchServer(SearchService):
    """The service listening on ``127.0.0.1:port`` in a background thread (``port=0``: any free port)."""

    def __init__(self, *, port: int = 0, api_key: str = "local-search-key") -> None:
        super().__init__(api_key)
        self._httpd = _HttpServer(port, self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> SearchServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="search-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8894)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args(argv)
    server = SearchServer(port=args.port, api_key=args.api_key)
    print(f"local AI Search listening on {server.url}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server._httpd.serve_forever()
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
