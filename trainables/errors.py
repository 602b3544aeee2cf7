"""Errors a user can fix: a bad value or missing data. Commands print them as one line."""


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names it and what is allowed."""


class DataError(RuntimeError):
    """A data set that cannot be found or read; the message says where to put the files."""
