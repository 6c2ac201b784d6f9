"""The one exception type that the CLI turns into a one-line error."""


class SVAEError(Exception):
    """Bad input or an unusable run: the message is shown to the user as it is."""
