"""lme4 formula syntax: parse ``y ~ fixed + (expr | group)`` into terms.

The parser is a small recursive-descent one rather than patsy/formulaic, because lme4's
random-effect bars, ``||`` and ``a/b`` nesting are not part of their grammars, and the
fixed part has to follow R's ``model.matrix`` conventions exactly (term order, contrasts,
column names) for estimates to line up with lme4 name by name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# A term is an ordered tuple of variable expressions (source text); () is the intercept.
Term = tuple[str, ...]

_TOKEN = re.compile(r"\s*(?:(\|\||[~+\-*:/|()^,])|([A-Za-z_.][A-Za-z0-9_.]*)|(\d+\.?\d*))")

_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "I": lambda x: x,
    "scale": lambda x: (x - np.mean(x)) / np.std(x, ddof=1),
}


@dataclass(frozen=True)
class RandomTerm:
    """One ``(lhs | group)`` bar: the lhs terms and the grouping factor (an interaction)."""

    terms: tuple[Term, ...]
    intercept: bool
    group: tuple[str, ...]

    @property
    def group_name(self) -> str:
        return ":".join(self.group)


@dataclass(frozen=True)
class Formula:
    """A parsed formula: response expression(s), fixed terms and random-effect bars."""

    text: str
    response: tuple[str, ...]  # (expr,) for y, (succ, fail) for cbind(succ, fail)
    terms: tuple[Term, ...]
    intercept: bool
    random: tuple[RandomTerm, ...] = field(default_factory=tuple)

    def variables(self) -> list[str]:
        """Every variable expression the formula reads, in order of first use."""
        seen: dict[str, None] = {}
        for expr in self.response:
            seen[expr] = None
        for term in self.terms:
            seen.update(dict.fromkeys(term))
        for bar in self.random:
            for term in bar.terms:
                seen.update(dict.fromkeys(term))
            seen.update(dict.fromkeys(bar.group))
        return list(seen)


class _Parser:
    """Recursive descent over the right-hand side; sums of terms with an intercept flag."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                bad = text[pos:].strip()[0]
                raise ValueError(f"malformed formula: unexpected character {bad!r}")
            op, name, num = m.groups()
            self.tokens.append(("op", op) if op else ("name", name) if name else ("num", num))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            want = f"{value!r}" if value else "a term"
            raise ValueError(f"malformed formula: expected {want} in {self.text!r}")
        self.i += 1
        return tok

    def raw_until_close(self) -> str:
        """Source text of a call's arguments, up to the matching parenthesis."""
        depth, parts = 1, []
        while True:
            tok = self.take()
            if tok[1] == "(":
                depth += 1
            elif tok[1] == ")":
                depth -= 1
                if depth == 0:
                    return "".join(parts)
            parts.append(tok[1])

    # expr := prod (('+'|'-') prod)*  -> (terms, intercept or None, bars)
    def expr(self) -> tuple[list[Term], bool | None, list[RandomTerm]]:
        terms, intercept, bars = self.prod()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.take()
            t2, i2, b2 = self.prod()
            if tok[1] == "+":
                terms += [t for t in t2 if t not in terms]
                bars += b2
                if i2 is not None:
                    intercept = i2
            else:
                if b2:
                    raise ValueError("malformed formula: cannot subtract a random-effect term")
                terms = [t for t in terms if t not in t2]
                if i2 is True:
                    intercept = False
        return terms, intercept, bars

    # prod := atom (('*'|':'|'/') atom)*
    def prod(self) -> tuple[list[Term], bool | None, list[RandomTerm]]:
        terms, intercept, bars = self.atom()
        while (tok := self.peek()) is not None and tok[1] in ("*", ":", "/"):
            self.take()
            t2, i2, b2 = self.atom()
            if bars or b2 or intercept is not None or i2 is not None:
                raise ValueError("malformed formula: '*', ':' and '/' need variables on both sides")
            cross = [_join(a, b) for a in terms for b in t2]
            if tok[1] == "*":
                terms = _unique(terms + t2 + cross)
            elif tok[1] == ":":
                terms = _unique(cross)
            else:  # a/b = a + a:b
                outer = tuple(v for t in terms for v in t)
                terms = _unique(terms + [_join(b, outer) for b in t2])
        return terms, intercept, bars

    def atom(self) -> tuple[list[Term], bool | None, list[RandomTerm]]:
        tok = self.take()
        kind, value = tok
        if kind == "num":
            if value in ("0", "1"):
                return [], value == "1", []
            raise ValueError(f"malformed formula: unexpected number {value!r}")
        if kind == "name":
            if (nxt := self.peek()) is not None and nxt[1] == "(":
                self.take("(")
                return [(f"{value}({self.raw_until_close()})",)], None, []
            return [(value,)], None, []
        if value == "(":
            start = self.i
            depth = 0
            for j in range(start, len(self.tokens)):
                v = self.tokens[j][1]
                depth += v == "("
                if v == ")":
                    if depth == 0:
                        break
                    depth -= 1
                if depth == 0 and v in ("|", "||"):
                    return [], None, self.bar()
            inner = self.expr()
            self.take(")")
            return inner
        raise ValueError(f"malformed formula: unexpected {value!r} in {self.text!r}")

    def bar(self) -> list[RandomTerm]:
        terms, intercept, bars = self.expr()
        if bars:
            raise ValueError("malformed formula: nested random-effect bars")
        op = self.take()[1]
        if op not in ("|", "||"):
            raise ValueError("malformed formula: expected '|' in a random-effect term")
        gterms, gint, gbars = self.expr()
        self.take(")")
        if gbars or gint is not None or not gterms:
            raise ValueError("malformed formula: the grouping factor must be variables")
        intercept = True if intercept is None else intercept
        if not terms and not intercept:
            raise ValueError("malformed formula: empty random-effect term")
        if op == "||":  # independent terms: (1 + x || g) = (1 | g) + (0 + x | g)
            parts = ([((), True)] if intercept else []) + [((t,), False) for t in terms]
            lhs = [(tuple(t for t in ts), i) for ts, i in parts]
        else:
            lhs = [(tuple(terms), intercept)]
        return [RandomTerm(ts, i, g) for g in gterms for ts, i in lhs]


def _join(a: Term, b: Term) -> Term:
    return a + tuple(v for v in b if v not in a)


def _unique(terms: list[Term]) -> list[Term]:
    out: list[Term] = []
    for t in terms:
        if not any(set(t) == set(o) for o in out):
            out.append(t)
    return out


def parse_formula(text: str) -> Formula:
    """Parse an lme4 formula; raise ``ValueError('malformed formula: ...')`` on bad syntax."""
    if not isinstance(text, str) or text.count("~") != 1:
        raise ValueError("malformed formula: expected exactly one '~' in the formula")
    lhs, rhs = (s.strip() for s in text.split("~"))
    if not lhs or not rhs:
        raise ValueError("malformed formula: need a response and a right-hand side")
    m = re.fullmatch(r"cbind\s*\((.*)\)", lhs)
    if m:
        parts = _split_args(m.group(1))
        if len(parts) != 2:
            raise ValueError("malformed formula: cbind() takes successes and failures")
        response = tuple(parts)
    else:
        response = (lhs,)
    for expr in response:
        _check_expression(expr)
    parser = _Parser(rhs)
    terms, intercept, bars = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"malformed formula: unexpected {parser.peek()[1]!r} in {rhs!r}")  # type: ignore[index]
    for term in terms:
        for var in term:
            _check_expression(var)
    terms = sorted(terms, key=len)  # R orders terms by their order (stable)
    return Formula(text, response, tuple(terms), True if intercept is None else intercept,
                   tuple(bars))


def _split_args(text: str) -> list[str]:
    depth, parts, cur = 0, [], []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def _check_expression(expr: str) -> ast.expr:
    try:
        return ast.parse(expr.replace("^", "**"), mode="eval").body
    except SyntaxError:
        raise ValueError(f"malformed formula: cannot read {expr!r}") from None


def evaluate(expr: str, data: pd.DataFrame) -> pd.Series:
    """Evaluate a variable expression (``rt``, ``log(rt)``, ``size - incidence``) safely."""
    if expr in data.columns:
        return data[expr]
    node = _check_expression(expr)

    def ev(n: ast.AST) -> object:
        if isinstance(n, ast.Name):
            if n.id not in data.columns:
                raise ValueError(f"unknown column {n.id!r} in formula")
            return data[n.id]
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
            return n.value
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)  # type: ignore[operator]
        if isinstance(n, ast.BinOp):
            ops: dict[type, Callable[[object, object], object]] = {
                ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
                ast.Pow: lambda a, b: a**b,
            }
            if type(n.op) in ops:
                return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and len(n.args) == 1:
            if n.func.id not in _FUNCTIONS:
                raise ValueError(f"malformed formula: unknown function {n.func.id!r}")
            arg = ev(n.args[0])
            return pd.Series(_FUNCTIONS[n.func.id](np.asarray(arg, dtype=float)),
                             index=data.index)
        raise ValueError(f"malformed formula: cannot evaluate {expr!r}")

    value = ev(node)
    return value if isinstance(value, pd.Series) else pd.Series(value, index=data.index)
