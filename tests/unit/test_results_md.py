"""RESULTS.md sections: a script replaces its own and leaves the others and the notes alone."""

from __future__ import annotations

import sys

from ..conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
from results_md import TITLE, replace_section


def test_a_new_section_goes_before_the_notes_and_a_rewrite_touches_only_itself():
    text = TITLE + "\n## Reading these numbers\nhand-written\n"
    text = replace_section(text, "a", "A1")
    text = replace_section(text, "b", "B1")
    assert text.index("A1") < text.index("B1") < text.index("## Reading these numbers")
    again = replace_section(text, "a", "A2\nmore")
    assert again.replace("A2\nmore", "A1") == text  # nothing else changed
    assert again.count("<!-- begin a -->") == 1 and again.endswith("hand-written\n")


def test_an_empty_file_gets_the_title():
    assert replace_section("", "x", "body").startswith(TITLE)
