"""Audit: a database password never appears in an error, a log line or command output.

Covers the config models (repr, pydantic errors, URLs libpq cannot parse), broker connection
failures against the real test server and against a loopback server that rejects the password
(as PostgreSQL does with a wrong password), `app.check(live=True)`, `horsies check --live` and
`horsies worker`.
"""

from __future__ import annotations

import contextlib
import runpy
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from horsies.app import Horsies
from horsies.banner import render_banner
from horsies.broker import PostgresBroker
from horsies.broker.errors import BrokerError
from horsies.config import AppConfig, PostgresConfig
from horsies.errors import ConfigurationError, ErrorCode
from horsies.redact import mask_database_url
from horsies.results import LibraryErrorCode
from log_capture import captured_logs
from process_harness import run_horsies
from psycopg import pq
from pydantic import ValidationError

PASSWORD = "Pw9-zq7Secret"
APPS = Path(__file__).resolve().parent / "apps"
OK_APP = f"{APPS / 'check_ok_app.py'}:app"


# -- helpers --------------------------------------------------------------------------------------


def leaks(text: str, password: str = PASSWORD) -> bool:
    """True if `text` shows the password or any 5-character piece of it (pydantic elides the
    middle of long inputs, which can leave the end of a password visible)."""
    return any(password[i : i + 5] in text for i in range(len(password) - 4))


class WrongPasswordServer:
    """A loopback server speaking just enough of the PostgreSQL protocol to refuse every login.

    It asks for a cleartext password, records what the client sent, and answers SQLSTATE 28P01
    ("password authentication failed"), exactly as a real server does for a wrong password.
    """

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="wrong-pw-server", daemon=True)

    def __enter__(self) -> WrongPasswordServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def url(self, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://alice:{password}@127.0.0.1:{self.port}/app"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError, ValueError, struct.error):
                conn.settimeout(5)
                self._refuse(conn)

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("client closed the connection")
            data += chunk
        return data

    def _refuse(self, conn: socket.socket) -> None:
        while True:  # startup packet; SSL and GSS encryption requests are declined first
            (length,) = struct.unpack("!i", self._read(conn, 4))
            body = self._read(conn, length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code not in (80877103, 80877104):
                break
            conn.sendall(b"N")
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        self.received.append(self._read(conn, length - 4).rstrip(b"\0"))
        fields = b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "alice"\0\0'
        conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)


@pytest.fixture
def wrong_password_server() -> Iterator[WrongPasswordServer]:
    with WrongPasswordServer() as server:
        yield server


def with_password(url: str, password: str, database: str) -> str:
    """`url` (the test server) with a password added and another database name."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    user = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", path=f"/{database}"))


# -- config models --------------------------------------------------------------------------------

URL = f"postgresql+psycopg://alice:{PASSWORD}@db.example:5432/app"


def test_repr_and_str_of_configs_mask_the_password() -> None:
    broker = PostgresConfig(database_url=URL)
    app_config = AppConfig(broker=broker)
    for text in (repr(broker), str(broker), repr(app_config), str(app_config), f"{app_config!r}"):
        assert not leaks(text)
        assert "alice:***@db.example:5432/app" in text
    # The real URL is untouched: it is what the broker connects with.
    assert broker.database_url == URL
    assert broker.model_dump()["database_url"] == URL


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: AppConfig(broker=URL), id="url-instead-of-config"),  # pyright: ignore
        pytest.param(lambda: PostgresConfig.model_validate(URL), id="model-validate-a-string"),
        pytest.param(
            lambda: AppConfig.model_validate({"brokr": {"database_url": URL}}), id="typo-in-key"
        ),
        pytest.param(
            lambda: PostgresConfig(database_url=URL.replace("+psycopg", "+asyncpg"), pool_size=-1),
            id="bad-scheme-and-range",
        ),
        pytest.param(
            lambda: AppConfig(broker=f"postgresql://u:{PASSWORD}@h/db"),  # pyright: ignore
            id="short-url",
        ),
    ],
)
def test_pydantic_errors_do_not_show_the_password(build: Any) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    text = str(info.value)
    assert not leaks(text)
    assert not leaks(repr(info.value))
    assert "validation error" in text  # still pydantic's own, helpful message


def refused_url_error(url: str) -> ConfigurationError:
    """The error of a config built from ``url``, which must be refused as an invalid URL (E203)."""
    with pytest.raises(ConfigurationError) as info:
        PostgresConfig(database_url=url)
    assert info.value.code is ErrorCode.BROKER_INVALID_URL
    assert info.value.message == "invalid database URL"
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://alice:p%zz-Pw9-zq7Secret@localhost:5432/app",  # bad %-escape
        pytest.param(
            "postgresql://alice:Pw9 zq7Secret@localhost:5432/app",  # raw space
            marks=pytest.mark.skipif(
                pq.version() < 170000, reason="libpq before 17 accepts a raw space in a URL"
            ),
        ),
        f"postgresql://alice:{PASSWORD}@localhost:5432/app?no_such_option=1",
    ],
    ids=["bad-percent-escape", "raw-space", "unknown-parameter"],
)
def test_url_libpq_cannot_parse_is_e203_without_the_password(url: str) -> None:
    # libpq quotes the offending part of the URL in its message, password included; refusing
    # such URLs when the config is built keeps that message out of every later error and log.
    error = refused_url_error(url)
    rendered = str(error)
    assert "Pw9-zq7Secret" not in rendered
    assert "Pw9 zq7Secret" not in rendered
    assert "alice:***@localhost" in rendered
    assert error.help_text is not None
    assert "percent-encode" in error.help_text


def test_percent_encoded_special_characters_are_accepted() -> None:
    url = "postgresql+psycopg://alice:p%40ss%20w%25rd@localhost:5432/app?sslmode=disable"
    assert PostgresConfig(database_url=url).database_url == url


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # libpq reads "?" and "#" before the "@" as part of the password.
        ("postgresql://u:Pw9?zq7Secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:Pw9#zq7Secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:Pw9@zq7Secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pw@h/db?application_name=a@b", "postgresql://u:***@h/db?application_name=a@b"),
        # A URL quoted inside an error message, followed by more text.
        (
            'OperationalError: cannot reach "postgresql://u:Pw9-zq7Secret@h/db" (ask admin@corp)',
            'OperationalError: cannot reach "postgresql://u:***@h/db" (ask admin@corp)',
        ),
        ("no url here: user@host", "no url here: user@host"),
        ("postgresql+psycopg://user@/db?host=/tmp/sock", "postgresql+psycopg://user@/db?host=/tmp/sock"),
    ],
)  # fmt: skip
def test_mask_database_url_hides_everything_libpq_reads_as_the_password(
    text: str, masked: str
) -> None:
    assert mask_database_url(text) == masked


def test_password_with_question_mark_is_accepted_and_masked_everywhere() -> None:
    url = "postgresql+psycopg://alice:Pw9?zq7Secret@db.example:5432/app"
    config = AppConfig(broker=PostgresConfig(database_url=url))
    assert config.broker.masked_url == "postgresql+psycopg://alice:***@db.example:5432/app"
    for text in (repr(config), config.describe(), render_banner(Horsies(config), "worker")):
        assert not leaks(text, "Pw9?zq7Secret")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:Pw9@zq7Secret@localhost:5432/app",
        "postgresql://alice:Pw9/zq7Secret@localhost:5432/app",
    ],
    ids=["raw-at", "raw-slash"],
)
def test_raw_at_or_slash_in_the_password_is_refused(url: str) -> None:
    # libpq would cut the password there and report the rest as a host or database name.
    error = refused_url_error(url)
    assert "the user name or password contains a raw '@' or '/'" in error.notes
    assert not leaks(str(error), "Pw9@zq7Secret")
    assert not leaks(str(error), "Pw9/zq7Secret")


# -- broker connection failures -------------------------------------------------------------------


def test_missing_database_errors_and_logs_hide_the_password(database_url: str) -> None:
    url = with_password(database_url, PASSWORD, "no_such_database_audit")
    broker = PostgresBroker(PostgresConfig(database_url=url, pool_timeout=1))
    try:
        with captured_logs("", "horsies") as lines:
            with pytest.raises(BrokerError) as raised:
                broker.enqueue("audit.t")
            result = broker.get_result("some-id", timeout_ms=500)
    finally:
        broker.close()
    assert not leaks(str(raised.value))
    error = result.unwrap_err()
    assert error.error_code == LibraryErrorCode.BROKER_ERROR
    assert not leaks(f"{error.message} {error.data} {error.exception}")
    assert lines, "the failure was logged"  # the pool reports failed connection attempts
    assert not [line for line in lines if leaks(line)]


def test_wrong_password_errors_and_logs_hide_the_password(
    wrong_password_server: WrongPasswordServer,
) -> None:
    broker = PostgresBroker(
        PostgresConfig(database_url=wrong_password_server.url(), pool_timeout=1)
    )
    try:
        with captured_logs("", "horsies") as lines:
            with pytest.raises(BrokerError) as raised:
                broker.enqueue("audit.t")
            result = broker.get_result("some-id", timeout_ms=500)
    finally:
        broker.close()
    # The password really was sent, and refused: this is the wrong-password path.
    assert PASSWORD.encode() in wrong_password_server.received
    assert not leaks(str(raised.value))
    assert not leaks(str(result.unwrap_err().exception))
    assert not [line for line in lines if leaks(line)]


def test_app_check_live_with_a_wrong_password(
    wrong_password_server: WrongPasswordServer,
) -> None:
    app = Horsies(AppConfig(broker=PostgresConfig(database_url=wrong_password_server.url())))
    try:
        errors = app.check(live=True)
    finally:
        app.get_broker().close()
    assert len(errors) == 1
    error = errors[0]
    assert error.code is ErrorCode.BROKER_UNREACHABLE
    assert error.message == "broker connectivity check failed"
    rendered = str(error)
    assert "password authentication failed" in rendered
    assert "alice:***@127.0.0.1" in rendered
    assert not leaks(rendered)
    assert PASSWORD.encode() in wrong_password_server.received


def test_cli_check_live_with_a_wrong_password(
    wrong_password_server: WrongPasswordServer,
) -> None:
    result = run_horsies(
        "check", OK_APP, "--live", env={"HORSIES_TEST_APP_DB_URL": wrong_password_server.url()}
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error[E209]: broker connectivity check failed" in result.stderr
    assert "password authentication failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not leaks(result.stdout + result.stderr)
    assert PASSWORD.encode() in wrong_password_server.received


def test_cli_check_live_with_a_missing_database(database_url: str) -> None:
    url = with_password(database_url, PASSWORD, "no_such_database_audit")
    result = run_horsies("check", OK_APP, "--live", env={"HORSIES_TEST_APP_DB_URL": url})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error[E209]: broker connectivity check failed" in result.stderr
    assert "no_such_database_audit" in result.stderr
    assert not leaks(result.stdout + result.stderr)


def test_worker_against_a_wrong_password_exits_1_without_showing_it(
    wrong_password_server: WrongPasswordServer, tmp_path: Path
) -> None:
    app_file = tmp_path / "wrong_pw_app.py"
    app_file.write_text(
        "import os\n"
        "from horsies.app import Horsies\n"
        "from horsies.config import AppConfig, PostgresConfig\n"
        "app = Horsies(AppConfig(broker=PostgresConfig(\n"
        "    database_url=os.environ['AUDIT_DB_URL'], pool_timeout=2)))\n",
        encoding="utf-8",
    )
    result = run_horsies(
        "worker",
        f"{app_file}:app",
        "--processes",
        "1",
        "--loglevel",
        "DEBUG",
        env={"AUDIT_DB_URL": wrong_password_server.url()},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert not leaks(output)
    assert "alice:***@127.0.0.1" in output  # the banner shows the masked URL
    assert PASSWORD.encode() in wrong_password_server.received


# -- a URL literal in the user's own code, quoted by an error rendering ----------------------------

ONE_LINE_APP = (
    "from horsies.app import Horsies\n"
    "from horsies.config import AppConfig, PostgresConfig\n"
    "app = Horsies(AppConfig(broker=PostgresConfig("
    f'database_url="postgresql+psycopg://alice:{PASSWORD}@db.example/app"), cluster_wide_cap=0))\n'
)


def test_rendered_source_line_masks_a_url_literal(tmp_path: Path) -> None:
    app_file = tmp_path / "one_line_app.py"
    app_file.write_text(ONE_LINE_APP, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        runpy.run_path(str(app_file))
    error = info.value
    assert error.code is ErrorCode.CONFIG_INVALID_CLUSTER_CAP
    assert error.location is not None
    assert (error.location.file, error.location.line) == (str(app_file), 3)
    rendered = error.format_rust_style(use_colors=False)
    assert 'database_url="postgresql+psycopg://alice:***@db.example/app"' in rendered
    assert not leaks(rendered)
    assert not leaks(error.format_rust_style(use_colors=True))

    result = run_horsies("check", f"{app_file}:app", env={})
    assert result.returncode == 1
    assert "error[E201]: cluster_wide_cap must be positive" in result.stderr
    assert "alice:***@db.example" in result.stderr
    assert not leaks(result.stdout + result.stderr)
