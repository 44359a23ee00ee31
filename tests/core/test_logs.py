"""Tests for horsies.logs: logger names and the CLI log format."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from horsies.logs import (
    TextBlock,
    configure_logging,
    configured_log_format,
    get_logger,
    set_log_context,
    task_fields,
)

LINE = re.compile(
    r"^\[(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] \[(?P<component>[^\]]+)\] "
    r"\[(?P<level>[A-Z]+)\] (?P<msg>.*)$"
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
    set_log_context()


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
    stamped = datetime.strptime(first["date"], "%Y-%m-%d %H:%M:%S")
    assert abs(stamped - datetime.now()) < timedelta(minutes=1)  # local time, with the date
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


# -- JSON lines ------------------------------------------------------------------------------------


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_fields_of_a_task_record() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, log_format="json")
    set_log_context(role="worker", worker_id="w-1")
    trace = "Traceback (most recent call last):\n  File x\nValueError: bad\n"
    get_logger("worker").warning(
        "task_failed: %s (%s): %s%s",
        "id-1",
        "e2e.fail",
        "UNHANDLED_EXCEPTION: bad",
        TextBlock(trace),
        extra=task_fields("id-1", "e2e.fail"),
    )
    (entry,) = json_lines(stream)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "horsies.worker"
    assert entry["message"] == "task_failed: id-1 (e2e.fail): UNHANDLED_EXCEPTION: bad"
    assert entry["action"] == "task_failed"
    assert (entry["task_id"], entry["task_name"]) == ("id-1", "e2e.fail")
    assert entry["traceback"] == trace.rstrip("\n")
    assert (entry["role"], entry["worker_id"]) == ("worker", "w-1")
    assert isinstance(entry["pid"], int)
    assert isinstance(entry["hostname"], str)
    stamped = datetime.fromisoformat(str(entry["timestamp"]))
    assert stamped.tzinfo is not None
    assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=1)
    assert configured_log_format() == "json"


def test_json_action_comes_from_the_template_or_extra_never_from_quoted_text() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, log_format="json")
    logger = get_logger("scheduler")
    logger.info("schedule_created: '%s'", "nightly")
    logger.info("%s", "forged_action: text a task chose")
    logger.info("Scheduler ready: 1 schedule")
    logger.info("plain", extra={"action": "given", "slot": datetime(2025, 1, 2, tzinfo=UTC)})
    created, quoted, ready, given = json_lines(stream)
    assert created["action"] == "schedule_created"
    assert "action" not in quoted
    assert "action" not in ready
    assert "task_id" not in ready
    assert given["action"] == "given"
    assert given["slot"] == "2025-01-02 00:00:00+00:00"  # not JSON itself: written as text


def test_json_lines_hold_one_record_each_whatever_it_quotes() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, log_format="json")
    nasty = 'a"b\\c\nforged\r\x1b[2J\u202e\u2028é'
    logger = get_logger("worker")
    logger.info("task_started: %s", nasty)
    try:
        raise RuntimeError("kaput\nsecond line")
    except RuntimeError:
        logger.exception("outcome_failed: %s", "id-2")
    raw = stream.getvalue()
    assert raw.isascii()
    assert "\x1b" not in raw
    lines = raw.splitlines()
    assert len(lines) == 2
    started, failed = (json.loads(line) for line in lines)
    # JSON escapes every field itself, so the message decodes to exactly what was logged.
    assert started["message"] == "task_started: " + nasty
    assert str(failed["traceback"]).startswith("Traceback (most recent call last):")
    assert "RuntimeError: kaput\nsecond line" in str(failed["traceback"])


def test_json_lines_go_to_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", log_format="json")
    get_logger("worker").info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["message"] == "to stderr"


def test_unknown_format_is_refused_and_text_is_the_default() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", log_format="xml")
    configure_logging("INFO", stream=io.StringIO())
    assert configured_log_format() == "text"
