"""Printed text in a notebook, wrapped between words: JupyterLab's output area breaks a line that is wider than
the area anywhere, mid-word ("cha nges"), so long sentences are wrapped here first."""
from __future__ import annotations

import textwrap

WIDTH = 100  # characters: inside the output area of JupyterLab at 1440x900 (a projector), with the file browser open


def wrap(text: str, width: int = WIDTH) -> str:
    """`text` with each of its lines wrapped at `width` between words; a word longer than a line (a path) stays whole."""
    return "\n".join(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) if line.strip() else line
                     for line in text.split("\n"))


def say(*texts: str, width: int = WIDTH) -> None:
    """Print each text wrapped between words (:func:`wrap`)."""
    print("\n".join(wrap(t, width) for t in texts))
