"""Tests for horsies.logs: logger names and the CLI log format."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
from horsies.logs import TextBlock, configure_logging, get_logger

LINE = re.compile(
    r"^\[(\d\d):(\d\d):(\d\d)\] \[(?P<component>[^\]]+)\] \[(?P<level>[A-Z]+)\] (?P<msg>.*)$"
)


@pytest.fixture(autouse=True)
def restore_horsies_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging changes the global "horsies" logger; put it back after each test."""
    for name in ("HORSIES_FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("horsies")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_get_logger_names_children_of_horsies() -> None:
    assert get_logger("broker").name == "horsies.broker"
    assert get_logger("worker.claimer").name == "horsies.worker.claimer"
    assert get_logger("horsies.app") is logging.getLogger("horsies.app")
    assert get_logger("horsies") is logging.getLogger("horsies")


def test_configure_logging_format_and_level() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    get_logger("broker").info("hello %s", "world")
    get_logger("broker").debug("hidden")
    logging.getLogger("horsies").warning("top level")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = LINE.match(lines[0])
    assert first is not None
    assert (first["component"], first["level"], first["msg"]) == ("broker", "INFO", "hello world")
    second = LINE.match(lines[1])
    assert second is not None
    assert (second["component"], second["level"]) == ("horsies", "WARNING")


def test_configure_logging_installs_one_handler_and_stops_propagation() -> None:
    logger = logging.getLogger("horsies")
    others = [h for h in logger.handlers if type(h).__module__ != "horsies.logs"]
    configure_logging(logging.DEBUG, stream=io.StringIO())
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    ours = [h for h in logger.handlers if type(h).__module__ == "horsies.logs"]
    assert len(ours) == 1  # whatever an earlier configuration of this process installed
    assert [h for h in logger.handlers if h not in ours] == others
    assert logger.propagate is False
    assert logger.level == logging.DEBUG
    get_logger("app").debug("once")
    assert stream.getvalue().count("once") == 1


def test_configure_logging_follows_the_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    get_logger("worker").info("to stdout")
    captured = capsys.readouterr()
    assert "[worker] [INFO] to stdout" in captured.out
    assert "to stdout" not in captured.err


def test_exceptions_are_appended() -> None:
    stream = io.StringIO()
    configure_logging("ERROR", stream=stream)
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        get_logger("worker").exception("task failed")
    text = stream.getvalue()
    assert "[worker] [ERROR] task failed\nTraceback (most recent call last):" in text
    assert "RuntimeError: kaput" in text


def test_levels_are_coloured_only_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = io.StringIO()
    configure_logging("INFO", stream=plain)
    get_logger("x").info("m")
    assert "\x1b[" not in plain.getvalue()

    monkeypatch.setenv("HORSIES_FORCE_COLOR", "1")
    coloured = io.StringIO()
    configure_logging("INFO", stream=coloured)
    get_logger("x").info("m")
    assert "[\x1b[32mINFO\x1b[0m] m" in coloured.getvalue()


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD")


def test_quoted_arguments_cannot_forge_or_hide_lines(caplog: pytest.LogCaptureFixture) -> None:
    """A task name with a newline, a carriage return or a right-to-left override is logged as
    escapes, whatever handler the application installed (caplog's here); letters stay as they
    are."""
    logger = get_logger("worker")
    with caplog.at_level(logging.INFO, logger="horsies"):
        logger.info("task_started: %s (%s)", "id-1", "rel.\nFAKE [worker] [ERROR] x\r\u202eé 中")
        logger.info("%(name)s", {"name": "a\tb"})
    first, second = (record.getMessage() for record in caplog.records)
    assert first == "task_started: id-1 (rel.\\nFAKE [worker] [ERROR] x\\r\\u202eé 中)"
    assert second == "a\\tb"


def test_a_text_block_keeps_its_lines_indented_and_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = get_logger("worker")
    with caplog.at_level(logging.INFO, logger="horsies"):
        logger.info("failed%s", TextBlock("Traceback:\n  x = 1\x1b[2J\nValueError: no\n"))
    assert caplog.records[0].getMessage() == (
        "failed\n    Traceback:\n      x = 1\\x1b[2J\n    ValueError: no"
    )
