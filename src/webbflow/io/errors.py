"""Errors raised for bad user input: one clear message naming the file and the fix."""

__all__ = ["InputError", "ReferenceFileError"]


class InputError(ValueError):
    """An input file cannot be reduced.

    The message names the file, says what is wrong and how to fix it, so a
    Snakemake log shows one actionable line instead of a traceback from deep
    inside astropy or numpy.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    problem : str
        What is wrong with it.
    fix : str
        What the user can do about it.
    """

    def __init__(self, path, problem, fix):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")


class ReferenceFileError(InputError):
    """A reference file is missing, unreadable or does not fit the science data."""
