"""Errors that mean "the input is wrong", as opposed to a bug.

Launch scripts catch `ArmJaxError` and print its message as one line with a non-zero
exit, without a traceback. Messages name the file, line, flag or value at fault and say
what was expected.
"""


class ArmJaxError(Exception):
    """Base class of user-facing input errors."""


class DataError(ArmJaxError):
    """A data file is missing, unreadable, malformed, or filtering leaves nothing."""


class ConfigError(ArmJaxError):
    """A configuration value (flag, hyperparameter, option) is invalid."""
