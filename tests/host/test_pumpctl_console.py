"""pumpctl's one table renderer: rich (box rules, styles) at a terminal,
plain aligned text when piped, with the same words either way."""
import io

import pytest

from pumpctl import console

ROWS = [["dose", "4 mg/day", "5 mg/day", "<< changed"], ["drug", "morphine 10 mg/mL", "morphine 10 mg/mL", ""]]
HEADERS = ["", "now", "after", ""]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def terminal(monkeypatch):
    # Standard output a terminal (set in the test itself: pytest's capture
    # sets sys.stdout again between a fixture and the test).
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    return lambda: monkeypatch.setattr("sys.stdout", Terminal())


def test_piped_tables_are_plain_aligned_text(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    text = console.table(ROWS, HEADERS)
    assert "\x1b[" not in text
    lines = text.split("\n")
    assert lines[1].replace(" ", "").strip("-") == ""  # the header rule
    assert lines[2].index("5 mg/day") == lines[3].index("morphine 10 mg/mL", 10)  # columns aligned


def test_terminal_tables_are_drawn_by_rich_with_changed_rows_styled(terminal):
    terminal()
    text = console.table(ROWS, HEADERS)
    assert "─" in text  # rich's header rule
    changed = next(line for line in text.split("\n") if "changed" in line)
    assert "\x1b[1;33m" in changed  # bold yellow
    assert "\x1b[" not in next(line for line in text.split("\n") if "drug" in line).replace("\x1b[0m", "")


def test_no_color_keeps_the_terminal_table_without_colour(terminal, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    terminal()
    text = console.table(ROWS, HEADERS)
    assert "─" in text and "\x1b[1;33m" not in text and "<< changed" in text


@pytest.mark.parametrize("styled", [False, True])
def test_every_cell_shows_in_either_form(styled, monkeypatch):
    monkeypatch.setattr("sys.stdout", Terminal() if styled else io.StringIO())
    monkeypatch.setenv("TERM", "xterm")
    text = console.table(ROWS, HEADERS)
    for cell in [c for r in ROWS for c in r if c] + ["now", "after"]:
        assert cell in text


@pytest.mark.parametrize("styled", [False, True])
def test_a_cell_with_a_line_break_or_an_escape_stays_on_its_row(styled, monkeypatch):
    # A diary note or a serial comes from the pump: "a\nb" must not start a
    # row of its own, nor "\x1b[2J" clear the clinician's screen.
    monkeypatch.setattr("sys.stdout", Terminal() if styled else io.StringIO())
    monkeypatch.setenv("TERM", "xterm")
    text = console.table([["note", "a\nb\x1b[2J\tc"], ["next", "row"]])
    assert len(text.strip("\n").split("\n")) == 2, text
    assert "a\\nb\\x1b[2J\\tc" in text and "\x1b[2J" not in text
