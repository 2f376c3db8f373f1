"""The one error type for bad input: its message names the problem and the fix, and the CLI prints it alone."""


class ConfigError(ValueError):
    pass
