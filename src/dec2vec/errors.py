"""Errors shared across dec2vec's modules."""


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file and line."""
