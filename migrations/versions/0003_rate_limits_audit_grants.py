"""rate limits table, audit chain sealed, insert-only audit grants

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00

- ``rate_limits``: the sliding window of each limited key (api/limits/).
- Audit records written before the chain existed get their prev_hash and hash, in id order
  (api/audit/chain.py), so that ``citykey audit verify`` covers the whole log.
- PostgreSQL only: the group role ``citykey_api`` that the API's login role must be a member
  of. It may read and write every table, but on ``audit_events`` only SELECT and INSERT;
  UPDATE, DELETE and TRUNCATE on ``audit_events`` are revoked from it and from PUBLIC. Default
  privileges extend the same table and sequence rights to tables later migrations create
  (audit_events keeps its narrower rights: it already exists). The table owner keeps every
  right, which is why the API must not run as the owner (docs/operations.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from api.audit.chain import GENESIS, chain_hash

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEAL_BATCH = 1000

_audit = sa.table(
    "audit_events",
    sa.column("id", sa.BigInteger()),
    sa.column("ts", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("building_id", sa.String()),
    sa.column("door_id", sa.String()),
    sa.column("gateway_id", sa.String()),
    sa.column("decision", sa.String()),
    sa.column("reason", sa.String()),
    sa.column("command_id", sa.String()),
    sa.column("result", sa.String()),
    sa.column("latency_ms", sa.Float()),
    sa.column("detail", sa.JSON()),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)


def _seal_existing() -> None:
    """Chain every record that has no hash yet, in id order (records with a hash keep it)."""
    bind = op.get_bind()
    prev = GENESIS
    after: int | None = None
    while True:
        query = sa.select(_audit).order_by(_audit.c.id).limit(SEAL_BATCH)
        if after is not None:
            query = query.where(_audit.c.id > after)
        rows = bind.execute(query).all()
        for row in rows:
            if row.hash is None:
                digest = chain_hash(prev, row)
                bind.execute(
                    sa.update(_audit)
                    .where(_audit.c.id == row.id)
                    .values(prev_hash=prev, hash=digest)
                )
                prev = digest
            else:
                prev = row.hash
        if len(rows) < SEAL_BATCH:
            return
        after = rows[-1].id


_GRANTS = [
    """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citykey_api') THEN
        CREATE ROLE citykey_api NOLOGIN;
    END IF;
EXCEPTION
    -- Roles are cluster-wide: another database's migration may create it at the same time.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$""",
    """
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO citykey_api', current_schema());
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO citykey_api',
        current_schema());
    EXECUTE format(
        'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO citykey_api', current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO citykey_api', current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
        'GRANT USAGE, SELECT ON SEQUENCES TO citykey_api', current_schema());
END
$$""",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM citykey_api",
]

_UNGRANT = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citykey_api') THEN
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
            'REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM citykey_api', current_schema());
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I '
            'REVOKE USAGE, SELECT ON SEQUENCES FROM citykey_api', current_schema());
        EXECUTE format(
            'REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM citykey_api', current_schema());
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM citykey_api', current_schema());
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM citykey_api', current_schema());
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("events", sa.ARRAY(sa.Float()).with_variant(sa.JSON(), "sqlite"), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    _seal_existing()
    if op.get_bind().dialect.name == "postgresql":
        for statement in _GRANTS:  # one statement per call (asyncpg prepares each)
            op.execute(statement)


def downgrade() -> None:
    # The role is cluster-wide and may serve other databases: only this database's grants go.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_UNGRANT)
    op.drop_table("rate_limits")
