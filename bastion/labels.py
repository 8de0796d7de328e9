"""Kubernetes label selectors: parse the string form and match labels against it.

The syntax and the matching rules are the API server's (``k8s.io/apimachinery``
``labels.Parse``): requirements separated by commas, each one of ``key``, ``!key``,
``key=value``, ``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin (a,b)``.
``!=`` and ``notin`` match a pod that lacks the key, as in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = ["LabelSelector", "Operator", "Requirement", "SelectorError", "parse_selector"]

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_NAME_RE = re.compile(_NAME)
_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_TOKEN_RE = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),!=]+)")


class SelectorError(ValueError):
    """The selector text is not valid; the message points at the offending part."""


class Operator(Enum):
    EXISTS = "exists"
    NOT_EXISTS = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case Operator.EXISTS:
                return present
            case Operator.NOT_EXISTS:
                return not present
            case Operator.EQUALS | Operator.IN:
                return present and labels[self.key] in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or labels[self.key] not in self.values
        raise AssertionError(self.operator)  # pragma: no cover - exhaustive match

    def __str__(self) -> str:
        values = sorted(self.values)
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.NOT_EXISTS:
                return f"!{self.key}"
            case Operator.EQUALS:
                return f"{self.key}={values[0]}"
            case Operator.NOT_EQUALS:
                return f"{self.key}!={values[0]}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(values)})"
        raise AssertionError(self.operator)  # pragma: no cover - exhaustive match


@dataclass(frozen=True)
class LabelSelector:
    """A parsed selector; the empty selector matches everything, as in Kubernetes."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _check_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix)):
        raise SelectorError(f"label key {key!r} has an invalid prefix (a lower-case DNS name)")
    if not name or len(name) > 63 or not _NAME_RE.fullmatch(name):
        raise SelectorError(
            f"label key {key!r} is not valid: at most 63 characters, alphanumeric at both ends, "
            "'-', '_' and '.' inside"
        )
    return key


def _check_value(value: str) -> str:
    if value and (len(value) > 63 or not _NAME_RE.fullmatch(value)):
        raise SelectorError(
            f"label value {value!r} is not valid: at most 63 characters, alphanumeric at both "
            "ends, '-', '_' and '.' inside"
        )
    return value


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the part pattern accepts any non-space run
            raise SelectorError(f"cannot read selector at {text[pos:]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def parse_selector(text: str) -> LabelSelector:
    """Parse the string form of a label selector (``app=web,tier in (a,b),!canary``)."""
    return _Parser(text).selector()


class _Parser:
    _OPERATORS = frozenset({"=", "==", "!="})
    _PUNCTUATION = frozenset({"(", ")", ",", "=", "==", "!=", "!"})

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def fail(self, problem: str) -> SelectorError:
        return SelectorError(f"selector {self.text!r}: {problem}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        part = self.peek()
        if part is None:
            raise self.fail("ends too early")
        self.pos += 1
        return part

    def selector(self) -> LabelSelector:
        requirements: list[Requirement] = []
        while self.peek() is not None:
            requirements.append(self.requirement())
            separator = self.peek()
            if separator is None:
                break
            if separator != ",":
                raise self.fail(f"expected ',' before {separator!r}")
            self.pos += 1
            if self.peek() is None:
                raise self.fail("ends with ','")
        return LabelSelector(tuple(requirements))

    def requirement(self) -> Requirement:
        part = self.take()
        if part == "!":
            return Requirement(_check_key(self.take()), Operator.NOT_EXISTS)
        if part in self._PUNCTUATION:
            raise self.fail(f"unexpected {part!r}, expected a label key")
        key = _check_key(part)
        following = self.peek()
        if following is None or following == ",":
            return Requirement(key, Operator.EXISTS)
        self.pos += 1
        if following in self._OPERATORS:
            op = Operator.NOT_EQUALS if following == "!=" else Operator.EQUALS
            value = ""  # "key=" is valid in Kubernetes and matches an empty label
            if self.peek() not in (None, ","):
                if self.peek() in self._PUNCTUATION:
                    raise self.fail(f"unexpected {self.peek()!r} after {key}{following}")
                value = _check_value(self.take())
            return Requirement(key, op, frozenset({value}))
        if following in {"in", "notin"}:
            op = Operator.IN if following == "in" else Operator.NOT_IN
            return Requirement(key, op, self.value_set())
        raise self.fail(f"after {key!r} expected =, ==, !=, in, notin or ','")

    def value_set(self) -> frozenset[str]:
        if self.take() != "(":
            raise self.fail("expected '(' after in/notin")
        values: list[str] = []
        while True:
            part = self.take()
            if part in self._PUNCTUATION:
                raise self.fail(f"expected a value in the set, got {part!r}")
            values.append(_check_value(part))
            separator = self.take()
            if separator == ")":
                return frozenset(values)
            if separator != ",":
                raise self.fail(f"expected ',' or ')' after {part!r}")
