"""Errors that selfknow reports to users as one clear line (the CLI prints them without a traceback)."""


class SelfknowError(Exception):
    """Base class: a problem with the user's input or environment, stated so they can fix it."""


class DataError(SelfknowError):
    """A dataset, file, column or record is missing or malformed."""


class ModelError(SelfknowError):
    """A model spec cannot be resolved or loaded."""


class GradingError(SelfknowError):
    """Answers cannot be graded as asked (e.g. no judge given for the judge strategy)."""
