"""Configuration, CLI flags, and the lost-connection banner with automatic reconnect."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from horsies.config import PostgresConfig
from syce.app import SyceApp, initial_theme
from syce.cli import main
from syce.config import NoDatabaseUrl, read_dotenv, resolve_config
from syce_seed import seed, wait_for
from textual.binding import Binding
from textual.widgets import Static

pytestmark = pytest.mark.timeout(60)

URL = "postgresql+psycopg://app:s3cret@db.example:5432/app"


def test_syce_url_from_flag_env_then_dotenv(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://env:pw@h/e"}
    assert resolve_config(URL, env, tmp_path).database_url == URL
    assert resolve_config(None, env, tmp_path).database_url == "postgresql://env:pw@h/e"
    (tmp_path / ".env").write_text(
        "# comment\nOTHER=1\nexport DATABASE_URL='postgres://dot:pw@h/d'\n", encoding="utf-8"
    )
    assert resolve_config(None, {}, tmp_path).database_url == "postgres://dot:pw@h/d"
    assert read_dotenv(tmp_path / "missing") == {}
    with pytest.raises(NoDatabaseUrl):
        resolve_config(None, {}, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="scheme") as info:
        resolve_config("mysql://u:hunter2@h/d", {}, tmp_path)
    assert "hunter2" not in str(info.value)


def test_syce_cli_flags_and_missing_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for flag in ("--database-url", "-d", "--tick-rate", "-t", "--frame-rate", "-f"):
        assert flag in result.output
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, [])
    assert result.exit_code == 2
    assert "DATABASE_URL" in result.output
    result = runner.invoke(main, ["-d", "mysql://u:hunter2@h/d"])
    assert result.exit_code == 2
    assert "hunter2" not in result.output


def test_syce_theme_follows_terminal_background() -> None:
    assert initial_theme({"COLORFGBG": "0;15"}) == "catppuccin-latte"
    assert initial_theme({"COLORFGBG": "15;0"}) == "catppuccin-mocha"
    assert initial_theme({}) == "catppuccin-mocha"


async def test_syce_unreachable_database_shows_banner_without_password() -> None:
    app = SyceApp(
        PostgresConfig(database_url="postgresql://app:hunter2@127.0.0.1:1/app"), tick_rate=10
    )
    async with app.run_test(size=(120, 40)) as pilot:
        banner = app.query_one("#banner", Static)
        await wait_for(pilot, lambda: banner.display, what="banner")
        text = str(banner.render())
        assert "Database connection lost" in text
        assert "reconnecting" in text
        assert "hunter2" not in text
        assert "hunter2" not in app.sub_title
        assert "***" in app.sub_title
        assert app.is_running


async def test_syce_lost_connection_reconnects_by_itself(database_url: str, clean_db: str) -> None:
    seed(clean_db)
    app = SyceApp(PostgresConfig(database_url=database_url), tick_rate=10)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.pane("dashboard")
        await wait_for(pilot, lambda: pane.data is not None, what="first load")
        banner = app.query_one("#banner", Static)
        assert not banner.display
        with psycopg.connect(clean_db, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'syce' AND datname = current_database()"
            )
        await wait_for(pilot, lambda: app.connection_failures > 0, what="failure noticed")
        await wait_for(pilot, lambda: app.connection_error is None, what="reconnected")
        assert not banner.display
        loads = pane.loads
        await wait_for(pilot, lambda: pane.loads > loads, what="loads after reconnect")


def test_syce_cli_passes_url_and_rates_to_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[SyceApp] = []
    monkeypatch.setattr(SyceApp, "run", lambda self, *a, **k: started.append(self))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TEXTUAL_FPS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://dot:hunter2@h/d\n", "utf-8")
    result = CliRunner().invoke(main, ["-t", "2.5", "-f", "30"])
    assert result.exit_code == 0, result.output
    (app,) = started
    assert app.config.database_url == "postgresql://dot:hunter2@h/d"
    assert app.tick_rate == 2.5
    assert os.environ["TEXTUAL_FPS"] == "30"
    assert "hunter2" not in app.sub_title
    result = CliRunner().invoke(main, ["--database-url", URL, "--tick-rate", "1"])
    assert result.exit_code == 0, result.output
    assert started[-1].config.database_url == URL
    assert started[-1].tick_rate == 1.0


def test_syce_global_bindings_include_suspend() -> None:
    keys = {b.key: b.action for b in SyceApp.BINDINGS if isinstance(b, Binding)}
    assert keys["ctrl+z"] == "suspend_process"
    assert "escape" not in keys  # Esc once too often must not quit
    assert keys["q"] == "quit"
    assert [keys[str(n)] for n in range(1, 6)] == [
        "switch_tab('dashboard')",
        "switch_tab('workers')",
        "switch_tab('tasks')",
        "switch_tab('workflows')",
        "switch_tab('maintenance')",
    ]
