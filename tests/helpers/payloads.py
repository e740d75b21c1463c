"""Files an attacker would craft: pickles whose loading runs code. Their payload only appends a
line to a marker file of the test's tmp folder, so a test asserts that the marker stays empty."""

from pathlib import Path

import torch


class Payload:
    """Unpickling it appends ``ran`` to ``marker``: what any code run by a file would stand for."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'a').write('ran\\n')",)


def pickled_payload(path: Path, marker: Path, **state) -> Path:
    """A ``torch.save`` file at ``path`` holding ``state`` and the payload (under ``"extra"``)."""
    torch.save({**state, "extra": Payload(marker)}, path)
    return path


def ran(marker: Path) -> bool:
    """Whether a payload appended to ``marker``."""
    return marker.exists() and marker.read_text() != ""


def one_paragraph(error: str) -> str:
    """The error's paragraph, checked to be one (no line breaks, no traceback)."""
    text = error.strip()
    if text.startswith("Error: "):
        text = text[len("Error: "):]
    assert "\n" not in text and "Traceback" not in text, error
    return text
