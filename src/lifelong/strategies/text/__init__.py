"""Strategies for language tasks: LAMOL (Sun, Ho & Lee 2020)."""

from lifelong.strategies.text import lamol  # noqa: F401  (registers lamol)
from lifelong.strategies.text.lamol import Lamol

__all__ = ["Lamol"]
