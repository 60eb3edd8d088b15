"""The one base of every error esr reports to a user: the CLI catches this type and prints its text."""

from __future__ import annotations


class EsrError(Exception):
    """A failure a user can act on; str() is one line naming the file (or flag) and the problem."""


class EsrWarning(UserWarning):
    """Something that works but that the user would want to know: the CLI prints it as one line."""
