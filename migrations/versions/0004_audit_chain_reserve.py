"""audit chain: lock, tail, ids (and hashes) in one round trip

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:00:00

PostgreSQL only, two functions (api/audit/chain.py); nothing else changes (no table, no data):

- ``citykey_audit_reserve(n)`` takes the audit chain's advisory lock for the calling
  transaction, then reads the hash of the newest sealed record and draws ``n`` ids from the
  sequence, in one statement (``seal``, the ORM flush path). It replaces two statements (the
  lock, then the tail and ids), because the tail must be read by a statement that starts after
  the lock is held: a PL/pgSQL function's statements each take a fresh snapshot under READ
  COMMITTED, so the read inside the function sees the previous holder's commit.
- ``citykey_audit_seal(records)`` does the same and also hashes each record, so that one
  ``INSERT ... SELECT`` seals and stores a batch (``insert_sealed``, the audit writer): for
  record *i* with the JSON fields ``head`` and ``tail`` (``chain.canonical_parts``: the
  record's canonical JSON around its id), ``hash = sha256(prev || '\n' || head || id ||
  tail)``, exactly ``chain.chain_hash``. Rows come back with their position ``n`` (1-based).

The lock key is ``api.audit.chain.LOCK_KEY``.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CREATE = """
CREATE FUNCTION citykey_audit_reserve(n integer)
RETURNS TABLE (prev_tail varchar, new_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    tail_hash varchar;
BEGIN
    -- api.audit.chain.LOCK_KEY: chain appends of every request and instance one at a time.
    PERFORM pg_advisory_xact_lock(-3552527288922200557);
    -- A new statement after the lock: its snapshot includes the previous holder's commit.
    SELECT e.hash INTO tail_hash FROM audit_events AS e
     WHERE e.hash IS NOT NULL ORDER BY e.id DESC LIMIT 1;
    RETURN QUERY
        SELECT tail_hash, nextval(pg_get_serial_sequence('audit_events', 'id'))
          FROM generate_series(1, n);
END
$$
"""


_CREATE_SEAL = """
CREATE FUNCTION citykey_audit_seal(records json)
RETURNS TABLE (n integer, new_id bigint, new_prev varchar, new_hash varchar)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prev varchar;
    item json;
BEGIN
    -- api.audit.chain.LOCK_KEY, then the tail read by a statement that starts after it.
    PERFORM pg_advisory_xact_lock(-3552527288922200557);
    SELECT e.hash INTO prev FROM audit_events AS e
     WHERE e.hash IS NOT NULL ORDER BY e.id DESC LIMIT 1;
    prev := coalesce(prev, repeat('0', 64));
    n := 0;
    FOR item IN SELECT value FROM json_array_elements(records) LOOP
        n := n + 1;
        new_id := nextval(pg_get_serial_sequence('audit_events', 'id'));
        new_prev := prev;
        new_hash := encode(
            sha256(convert_to(
                prev || E'\\n' || (item->>'head') || new_id::text || (item->>'tail'), 'UTF8'
            )),
            'hex'
        );
        prev := new_hash;
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_CREATE)
    op.execute(_CREATE_SEAL)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS citykey_audit_seal(json)")
    op.execute("DROP FUNCTION IF EXISTS citykey_audit_reserve(integer)")
