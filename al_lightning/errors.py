"""Errors that the command line reports as a one-line message instead of a traceback."""


class ConfigurationError(ValueError):
    """A setting or an input file is wrong; the message names the problem and the fix."""
