"""Lexical scanning: finding ``{{ … }}`` in a string and the names a CEL expression reads.

Nothing here parses CEL fully (the CEL compiler does that); the scanner only needs to know where
string literals, comments and identifiers are, so that a ``}}`` or a ``steps.x`` inside a string
literal is never mistaken for code.
"""

from __future__ import annotations

from dataclasses import dataclass

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
_STRING_PREFIXES = frozenset({"r", "R", "b", "B", "rb", "rB", "Rb", "RB", "br", "bR", "Br", "BR"})
# Identifiers the CEL grammar reserves as literals or operators: never variable references.
_KEYWORDS = frozenset({"true", "false", "null", "in"})
# A '.' after one of these is a member access; after anything else it is CEL's leading dot.
_OPERAND_END = frozenset({"ident", "quoted", "number", "string", ")", "]", "}"})


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a template string: literal text, or the CEL source of one ``{{ … }}``.

    Attributes:
        text: the literal text, or the expression source between the braces (unstripped).
        start: offset in the whole string of ``text[0]``.
        is_expr: whether this is an expression.
        open_offset: offset of the ``{{`` of an expression (``start`` for literal text).
    """

    text: str
    start: int
    is_expr: bool
    open_offset: int


@dataclass(frozen=True, slots=True)
class Token:
    """A CEL token: ``kind`` is ident, quoted (a back-quoted field), number, string or the char."""

    kind: str
    text: str
    start: int


def _string_end(text: str, i: int) -> int:
    """Return the index after the string literal whose quote (or prefix) starts at ``i``, or -1."""
    raw = False
    while text[i] not in "\"'":
        raw = raw or text[i] in "rR"
        i += 1
    quote = text[i] * 3 if text.startswith(text[i] * 3, i) else text[i]
    i += len(quote)
    n = len(text)
    while i < n:
        if text.startswith(quote, i):
            return i + len(quote)
        i += 2 if text[i] == "\\" and not raw else 1
    return -1


def _prefix_len(text: str, i: int) -> int:
    """Length of a string prefix (r, b, rb …) starting at ``i`` and followed by a quote, else 0."""
    for size in (2, 1):
        if (
            text[i : i + size] in _STRING_PREFIXES
            and text[i + size : i + size + 1] in ("'", '"')
            and (i == 0 or text[i - 1] not in _IDENT_CHARS)
        ):
            return size
    return 0


def split_template(text: str) -> tuple[list[Segment], list[tuple[int, str]]]:
    """Split ``text`` into literal and ``{{ … }}`` segments.

    A template ends at the first ``}}`` that is outside string literals and not closing a ``{``
    opened inside the expression (so ``{{ {"a": {"b": 1}} }}`` is one template).

    Returns:
        The segments in order, and the problems found as ``(offset, message)`` pairs (an unclosed
        ``{{`` or an empty template). After an unclosed ``{{`` the rest of the string is not split.
    """
    segments: list[Segment] = []
    problems: list[tuple[int, str]] = []
    pos = 0
    n = len(text)
    while True:
        open_at = text.find("{{", pos)
        if open_at < 0:
            if pos < n:
                segments.append(Segment(text[pos:], pos, False, pos))
            return segments, problems
        if open_at > pos:
            segments.append(Segment(text[pos:open_at], pos, False, pos))
        i = open_at + 2
        depth = 0
        close_at = -1
        in_string = False
        while i < n:
            c = text[i]
            prefix = _prefix_len(text, i) if c in "rRbB" else 0
            if c in "\"'" or prefix:
                end = _string_end(text, i)
                if end < 0:
                    in_string = True
                    break
                i = end
            elif c == "{":
                depth += 1
                i += 1
            elif c == "}":
                if depth == 0 and text.startswith("}}", i):
                    close_at = i
                    break
                depth = max(depth - 1, 0)
                i += 1
            else:
                i += 1
        if close_at < 0:
            why = " (a string literal inside it is not terminated)" if in_string else ""
            problems.append((open_at, f"unclosed '{{{{': no matching '}}}}'{why}"))
            return segments, problems
        source = text[open_at + 2 : close_at]
        if not source.strip():
            problems.append((open_at, "empty template '{{ }}'"))
        segments.append(Segment(source, open_at + 2, True, open_at))
        pos = close_at + 2


def tokenize(source: str) -> list[Token]:
    """Tokenize CEL source well enough to find identifiers outside strings and comments."""
    tokens: list[Token] = []
    i = 0
    n = len(source)
    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
        elif source.startswith("//", i):
            newline = source.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif c in "\"'" or (c in "rRbB" and _prefix_len(source, i)):
            end = _string_end(source, i)
            end = n if end < 0 else end
            tokens.append(Token("string", source[i:end], i))
            i = end
        elif c in _DIGITS or (c == "." and source[i + 1 : i + 2] in _DIGITS and i + 1 < n):
            j = i + 1
            while j < n and (source[j] in _IDENT_CHARS or source[j] == "."):
                j += 1
            tokens.append(Token("number", source[i:j], i))
            i = j
        elif c in _IDENT_START:
            j = i + 1
            while j < n and source[j] in _IDENT_CHARS:
                j += 1
            tokens.append(Token("ident", source[i:j], i))
            i = j
        elif c == "`":
            end = source.find("`", i + 1)
            end = n if end < 0 else end + 1
            tokens.append(Token("quoted", source[i:end], i))
            i = end
        else:
            tokens.append(Token(c, c, i))
            i += 1
    return tokens


def root_indexes(tokens: list[Token]) -> list[int]:
    """Indexes of the identifier tokens that are variable references (not fields, not keywords).

    An identifier is a root unless a member-access dot precedes it; a dot that follows an
    operator, an opening bracket or the start is CEL's leading dot and keeps the name a root.
    """
    roots: list[int] = []
    for k, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text in _KEYWORDS:
            continue
        if k > 1 and tokens[k - 1].kind == "." and tokens[k - 2].kind in _OPERAND_END:
            continue
        if k + 1 < len(tokens) and tokens[k + 1].kind == "(":
            continue  # a global function call such as size(x) or has(x.y)
        roots.append(k)
    return roots


def field_name(tok: Token) -> str | None:
    """The field named by an identifier, a back-quoted name or a simple string literal."""
    if tok.kind == "ident":
        return tok.text
    if tok.kind == "quoted":
        return tok.text[1:-1]
    if tok.kind == "string" and len(tok.text) >= 2 and tok.text[0] in "\"'":
        body = tok.text[1:-1]
        if "\\" not in body and tok.text[0] not in body:
            return body
    return None


def member_after(tokens: list[Token], k: int) -> tuple[str, int] | None:
    """The member selected right after token ``k`` (``.name`` or ``["name"]``) and its offset."""
    if k + 2 < len(tokens) and tokens[k + 1].kind == ".":
        tok = tokens[k + 2]
        if tok.kind in ("ident", "quoted") and not (
            k + 3 < len(tokens) and tokens[k + 3].kind == "("
        ):
            name = field_name(tok)
            if name is not None:
                return name, tok.start
    if k + 3 < len(tokens) and tokens[k + 1].kind == "[" and tokens[k + 3].kind == "]":
        name = field_name(tokens[k + 2])
        if name is not None and tokens[k + 2].kind == "string":
            return name, tokens[k + 2].start
    return None


def paths(tokens: list[Token]) -> list[tuple[list[str], list[int]]]:
    """Every chain of field selections starting at a root: names and the offset of each name."""
    chains: list[tuple[list[str], list[int]]] = []
    for k in root_indexes(tokens):
        names = [tokens[k].text]
        offsets = [tokens[k].start]
        j = k
        while (member := member_after(tokens, j)) is not None:
            names.append(member[0])
            offsets.append(member[1])
            j += 2 if tokens[j + 1].kind == "." else 3
        chains.append((names, offsets))
    return chains
