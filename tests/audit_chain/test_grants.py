"""The database role the API runs as (a login role in the group citykey_api, migration 0003)
may insert audit records but neither update nor delete them, and may write every other table.
Checked on the suite's migrated database, by connecting as such a role, and by running the
real API as it."""

import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import col

from api.audit import chain
from api.audit.models import AuditEvent
from api.buildings.models import Building
from api.identity.models import Role, User
from api.main import create_app
from api.settings import Settings
from tests.conftest import PG_ADMIN_URL, ApiHarness
from tests.support import World, unique


def _admin_url(database_url: str) -> str:
    """The superuser's asyncpg DSN for the database of ``database_url``."""
    return f"postgresql://{urlsplit(PG_ADMIN_URL).netloc}{urlsplit(database_url).path}"


@pytest.fixture
async def app_role_url(pg_database_url: str) -> AsyncIterator[str]:
    """A login role that is a member of citykey_api (and nothing else), for this test."""
    role = f"citykey_test_app_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(_admin_url(pg_database_url))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT citykey_api TO {role}")
        parts = urlsplit(pg_database_url)
        yield f"postgresql+asyncpg://{role}@{parts.hostname}:{parts.port or 5432}{parts.path}"
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_app_role_inserts_audit_records_but_cannot_change_them(app_role_url: str) -> None:
    engine = create_async_engine(app_role_url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            record = chain.append(session, AuditEvent(action="grants.test", actor="u-grants"))
            await session.commit()
        assert record.id is not None
        assert record.hash is not None

        refused = []
        for statement in (
            "UPDATE audit_events SET actor = 'u-intruder' WHERE id = :id",
            "DELETE FROM audit_events WHERE id = :id",
            "TRUNCATE audit_events",
        ):
            async with engine.connect() as conn:
                with pytest.raises(ProgrammingError, match="permission denied") as caught:
                    await conn.execute(text(statement), {"id": record.id})
                cause = getattr(caught.value.orig, "__cause__", None)  # asyncpg's own exception
                refused.append(f"{type(cause).__name__} {getattr(cause, 'sqlstate', '?')}")
        async with engine.connect() as conn:
            unchanged = (
                await conn.execute(
                    text("SELECT actor FROM audit_events WHERE id = :id"), {"id": record.id}
                )
            ).scalar()
        assert unchanged == "u-grants"

        # Every other table: read and write.
        async with engine.connect() as conn:
            privileges = (
                await conn.execute(
                    text(
                        "SELECT tablename,"
                        " has_table_privilege(current_user, quote_ident(tablename),"
                        "  'SELECT, INSERT, UPDATE, DELETE') AS writable,"
                        " has_table_privilege(current_user, quote_ident(tablename), 'UPDATE')"
                        "  OR has_table_privilege(current_user, quote_ident(tablename), 'DELETE')"
                        "  OR has_table_privilege(current_user, quote_ident(tablename), 'TRUNCATE')"
                        "  AS can_change"
                        " FROM pg_tables WHERE schemaname = current_schema()"
                    )
                )
            ).all()
        tables = {row.tablename: row for row in privileges}
        assert not tables["audit_events"].can_change
        not_writable = [t for t, row in tables.items() if t != "audit_events" and not row.writable]
        assert not_writable == []
        async with AsyncSession(engine) as session:
            building = Building(id=unique("bld"), name="Grants test")
            session.add(building)
            await session.commit()
            building.name = "Renamed"
            await session.commit()
            await session.delete(building)
            await session.commit()
        print(
            f"\ngrants: as a member of citykey_api: INSERT into audit_events works; UPDATE, "
            f"DELETE, TRUNCATE refused ({', '.join(refused)}); {len(tables) - 1} other tables "
            "writable"
        )
    finally:
        await engine.dispose()


async def test_the_api_runs_as_the_app_role(
    api: ApiHarness, world: World, settings: Settings, app_role_url: str
) -> None:
    """Unlock (allowed and refused), a management change and the audit query, all through the
    real API connected as the restricted role: the grants are enough for the API's work."""
    gateway_id, doors = await world.add_gateway()
    (door_id,) = doors
    await world.grant(world.citizen_id, door_id=door_id)
    await world.start_gateway(gateway_id, doors)
    admin_id = unique("u-adm")
    async with api.state.sessions() as session:
        session.add(User(id=admin_id, display_name="Admin", roles=[Role.ADMIN]))
        await session.commit()

    app = create_app(
        settings.model_copy(
            update={"database_url": app_role_url, "instance_id": f"api-role-{secrets.token_hex(3)}"}
        )
    )
    async with app.router.lifespan_context(app):
        state = app.state.citykey
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            def bearer(user_id: str) -> dict[str, str]:
                assert state.dev_identity is not None
                return {"Authorization": f"Bearer {state.dev_identity.issue(user_id)}"}

            opened = await client.post(
                f"/v1/doors/{door_id}/unlock", headers=bearer(world.citizen_id)
            )
            assert opened.status_code == 200, opened.text
            refused = await client.post(
                f"/v1/doors/{door_id}/unlock", headers=bearer(world.stranger_id)
            )
            assert refused.status_code == 403, refused.text
            renamed = await client.patch(
                f"/v1/doors/{door_id}", headers=bearer(admin_id), json={"name": "Main entrance"}
            )
            assert renamed.status_code == 200, renamed.text
            audit = await client.get(
                "/v1/audit", headers=bearer(admin_id), params={"door_id": door_id}
            )
            assert audit.status_code == 200, audit.text
            assert len(audit.json()["items"]) >= 4  # requested + completed, denial, change
        async with state.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(AuditEvent).where(col(AuditEvent.door_id) == door_id)
                    )
                )
                .scalars()
                .all()
            )
            assert all(row.hash is not None and row.prev_hash is not None for row in rows)
