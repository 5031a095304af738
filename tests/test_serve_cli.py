"""`citykey serve` refuses a database that is not at the newest schema, before binding a port."""

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.migrate import current_revision, newest_revision, upgrade


def test_serve_refuses_an_unmigrated_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/not-yet/citykey.db"
    monkeypatch.setenv("CITYKEY_DATABASE_URL", url)
    monkeypatch.setenv("CITYKEY_KEY_DIR", str(tmp_path / "keys"))
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "run `citykey migrate`" in result.output
    assert (tmp_path / "not-yet").is_dir()  # the SQLite folder is made, not left to fail


async def test_revisions_are_read_from_the_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/citykey.db"
    assert await current_revision(url) is None
    await asyncio.to_thread(upgrade, url)  # alembic runs its own event loop
    assert await current_revision(url) == newest_revision()
