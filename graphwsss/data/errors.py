"""The one error type for bad input files."""

from __future__ import annotations

import os


class DataError(ValueError):
    """A problem with an input file. ``str(error)`` names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
