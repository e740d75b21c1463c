"""Progress bars that show only where someone watches.

A tqdm bar redraws itself with carriage returns: in a terminal it is one line, in a log file, a
pipe or a CI log every redraw stays, and one epoch's bar becomes kilobytes of a single line. So
every bar of the package is off unless both stdout and stderr are terminals (tqdm draws on
stderr; stdout redirected usually means the whole output is being captured).
"""

import sys

from tqdm import tqdm


def interactive() -> bool:
    """Whether stdout and stderr are both terminals."""
    try:
        return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))
    except (AttributeError, ValueError):  # a stream without isatty, or closed
        return False


def progress_bar(iterable=None, *, disable: bool = False, **options) -> tqdm:
    """``tqdm(iterable, **options)``, disabled when asked or when the output is not a terminal."""
    return tqdm(iterable, disable=disable or not interactive(), **options)
