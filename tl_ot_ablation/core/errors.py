"""The one exception class for bad input, so that callers can tell it from a bug.

Every check on what a user passed (arguments, files, settings, prompts, fitted objects that do
not fit the model) raises ``UserInputError``, with a message that says what was wrong and how to
fix it. It is a ``ValueError``, so ``except ValueError`` keeps working. The CLI prints it as one
line (exit 2); any other exception is a bug in the package and shows its traceback.
"""


class UserInputError(ValueError):
    """What the user passed is wrong; the message says what and how to fix it."""
