"""Errors meant for the user: one paragraph that names the key or file and the fix.

``user_error_of`` also recognises the user errors that reach the entry points in another form: a
UserError raised inside a constructor that ``hydra.utils.instantiate`` called, a UserError that
torch re-raised from a DataLoader worker, and a mandatory config value (``???``) left unset.
"""

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue


class UserError(Exception):
    """A problem the user can fix (missing data, bad override...). Printed without a traceback."""


# Examples for the mandatory values (``???``) of configs/ that the user gives (the loss configs'
# ``num_classes`` and ``embedding_size`` are filled in by dml_bench.builders).
MISSING_VALUE_EXAMPLES = {
    "dataset.root": "dataset.root=/path/to/folder (a folder with splits/train.csv and splits/test.csv)",
    "checkpoint": "checkpoint=outputs/2026-01-31/12-00-00/checkpoints/best.pt",
}


def missing_value_error(key: str) -> UserError:
    example = MISSING_VALUE_EXAMPLES.get(key, f"{key}=VALUE")
    return UserError(f"{key} must be set: its config leaves it as ??? (mandatory). Add it to the command, "
                     f"e.g. {example}.")


def from_worker(error: UserError) -> UserError:
    """The UserError that a DataLoader worker raised, as it was raised there.

    torch sends a worker's exception to the main process as its type and formatted traceback
    (``torch._utils.ExceptionWrapper``) and raises ``type(message)`` there, with the message
    "Caught UserError in DataLoader worker process 0.\\nOriginal Traceback ..." whose last
    exception line, ``dml_bench.runtime.errors.UserError: ...``, holds the original message.
    """
    text = str(error)
    exception_line = f"\n{type(error).__module__}.{type(error).__qualname__}: "
    if not (text.startswith(f"Caught {type(error).__name__} ") and "\nOriginal Traceback" in text
            and exception_line in text):
        return error
    return type(error)(text.rsplit(exception_line, 1)[1].rstrip("\n"))


def user_error_of(error: BaseException) -> UserError | None:
    """The UserError that ``error`` is or stands for, or None when it is none (a bug)."""
    if isinstance(error, InstantiationException):
        while error is not None and not isinstance(error, UserError | MissingMandatoryValue):
            error = error.__cause__
    if isinstance(error, MissingMandatoryValue):
        return missing_value_error(error.full_key)
    return from_worker(error) if isinstance(error, UserError) else None
