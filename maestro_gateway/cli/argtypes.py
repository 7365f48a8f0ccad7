"""Argument types shared by the commands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """A positive integer; anything else is a usage error naming the text."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value
