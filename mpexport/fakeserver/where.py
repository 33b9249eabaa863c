"""A small subset of Mixpanel's ``where`` expression language.

Supported: ``properties["KEY"] == LITERAL``, ``!=``, ``defined(properties["KEY"])``,
``not``, ``and``, ``or`` and parentheses. Literals: double- or single-quoted
strings, numbers, ``true``, ``false``, ``null``. A missing property is never
``==`` anything and always ``!=`` everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


class WhereError(ValueError):
    """The expression is outside the supported subset."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<op>==|!=|\(|\)|\[|\])
    |(?P<word>[A-Za-z_]+)
    )""",
    re.VERBOSE,
)
_MISSING = object()


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise WhereError(f"unexpected character at offset {pos}: {text[pos : pos + 10]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _string_value(raw: str) -> str:
    if raw.startswith("'"):
        # Re-quote so json.loads can handle escapes the same way for both quote styles.
        raw = '"' + raw[1:-1].replace('\\"', '"').replace('"', '\\"').replace("\\'", "'") + '"'
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise WhereError(f"bad string literal {raw!r}") from exc
    assert isinstance(value, str)
    return value


def _same(left: Any, right: Any) -> bool:
    # bool is an int in Python, but true must not equal 1 in a where clause.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    return type(left) is type(right) and bool(left == right)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            want = value if value is not None else kind
            raise WhereError(f"expected {want!r}, got {token[1] if token else 'end'!r}")
        self.pos += 1
        return token[1]

    def at(self, kind: str, value: str) -> bool:
        return self.peek() == (kind, value)

    def parse(self) -> Predicate:
        pred = self.or_expr()
        extra = self.peek()
        if extra is not None:
            raise WhereError(f"unexpected {extra[1]!r}")
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.at("word", "or"):
            self.pos += 1
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda props: any(p(props) for p in parts)

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while self.at("word", "and"):
            self.pos += 1
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda props: all(p(props) for p in parts)

    def unary(self) -> Predicate:
        if self.at("word", "not"):
            self.pos += 1
            inner = self.unary()
            return lambda props: not inner(props)
        if self.at("op", "("):
            self.pos += 1
            inner = self.or_expr()
            self.take("op", ")")
            return inner
        if self.at("word", "defined"):
            self.pos += 1
            self.take("op", "(")
            key = self.property_ref()
            self.take("op", ")")
            return lambda props: key in props
        return self.comparison()

    def property_ref(self) -> str:
        self.take("word", "properties")
        self.take("op", "[")
        key = _string_value(self.take("str"))
        self.take("op", "]")
        return key

    def literal(self) -> Any:
        token = self.peek()
        if token is None:
            raise WhereError("expected a literal, got end")
        kind, raw = token
        self.pos += 1
        if kind == "str":
            return _string_value(raw)
        if kind == "num":
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        if kind == "word" and raw in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[raw]
        raise WhereError(f"expected a literal, got {raw!r}")

    def comparison(self) -> Predicate:
        if self.at("word", "properties"):
            key = self.property_ref()
            op = self.take("op")
            value = self.literal()
        else:
            value = self.literal()
            op = self.take("op")
            key = self.property_ref()
        if op == "==":
            return lambda props: _same(props.get(key, _MISSING), value)
        if op == "!=":
            return lambda props: not _same(props.get(key, _MISSING), value)
        raise WhereError(f"unsupported operator {op!r}")


def compile_where(expression: str) -> Predicate:
    """Compile ``expression`` into a predicate over an event's ``properties``.

    Raises ``WhereError`` for anything outside the supported subset.
    """
    tokens = _tokenize(expression)
    if not tokens:
        raise WhereError("empty expression")
    return _Parser(tokens).parse()
