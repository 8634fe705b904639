"""Strategies for language tasks: LAMOL (Sun, Ho & Lee 2020).

Importing this family also registers the text models (``memnet``, ``lm``) of
:mod:`lifelong.text_models`.
"""

from lifelong import text_models  # noqa: F401  (registers the memnet and lm models)
from lifelong.strategies.text import lamol  # noqa: F401  (registers lamol)
from lifelong.strategies.text.lamol import Lamol

__all__ = ["Lamol"]
