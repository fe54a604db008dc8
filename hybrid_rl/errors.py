"""The error every layer raises for a user's invalid setting; `cli.run` prints it as one
FATAL line. It sits at the bottom of the package so that data, train and config checks
can all raise it without importing each other."""


class ConfigError(ValueError):
  """A config field holds an invalid value."""
