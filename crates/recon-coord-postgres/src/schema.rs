//! The coordinator's tables, created once per database under an advisory
//! lock (several members may connect at once).

use crate::error::{Error, Result};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

/// The advisory lock key that serialises creating the tables.
const SCHEMA_LOCK: i64 = 0x7265_636f_6e5f_6364; // "recon_cd"

const STATEMENTS: [&str; 6] = [
    "CREATE SEQUENCE IF NOT EXISTS recon_coord_revision",
    "CREATE TABLE IF NOT EXISTS recon_coord_sessions (
        id bigint PRIMARY KEY,
        prefix text NOT NULL,
        member text NOT NULL,
        expires_at timestamptz NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS recon_coord_sessions_expiry
        ON recon_coord_sessions (prefix, expires_at)",
    "CREATE TABLE IF NOT EXISTS recon_coord_entries (
        prefix text NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        value bytea NOT NULL,
        version bigint NOT NULL,
        created bigint NOT NULL,
        session bigint REFERENCES recon_coord_sessions (id) ON DELETE CASCADE,
        PRIMARY KEY (prefix, key)
    )",
    "CREATE INDEX IF NOT EXISTS recon_coord_entries_session
        ON recon_coord_entries (session) WHERE session IS NOT NULL",
    COMMIT_FUNCTION,
];

/// One transaction of the port (`recon_coord::backend::Txn`) as one call:
/// the service's advisory lock, expired sessions deleted, the member's own
/// session checked, then the guard, the conditions and the writes. `body`
/// is built by `backend.rs`; the answer is `done`, `stale`, `conflict` or
/// `session_lost` (and nothing is written unless `done`).
const COMMIT_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION recon_coord_commit(body jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p text := body->>'prefix';
    own bigint := (body->>'session')::bigint;
    first_candidate record;
    condition jsonb;
    write jsonb;
    held record;
    revision bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('recon-coord:' || p, 0));
    DELETE FROM recon_coord_sessions
        WHERE prefix = p AND expires_at <= clock_timestamp();
    IF NOT EXISTS (SELECT 1 FROM recon_coord_sessions WHERE id = own) THEN
        RETURN 'session_lost';
    END IF;
    IF body->>'guard' <> 'session' THEN
        SELECT value, created INTO first_candidate FROM recon_coord_entries
            WHERE prefix = p
              AND key >= body->>'election_start' AND key < body->>'election_end'
            ORDER BY created LIMIT 1;
        IF body->>'guard' = 'no_candidate' AND FOUND THEN
            RETURN 'stale';
        END IF;
        IF body->>'guard' = 'leader' AND (NOT FOUND
            OR first_candidate.created <> (body->>'epoch')::bigint
            OR first_candidate.value <> convert_to(body->>'member', 'UTF8')) THEN
            RETURN 'stale';
        END IF;
    END IF;
    FOR condition IN SELECT * FROM jsonb_array_elements(body->'conditions') LOOP
        SELECT version, value, session INTO held FROM recon_coord_entries
            WHERE prefix = p AND key = condition->>'key';
        IF NOT FOUND THEN
            IF condition->>'kind' <> 'absent' THEN
                RETURN 'conflict';
            END IF;
        ELSIF condition->>'kind' = 'absent'
            OR (condition->>'kind' = 'version'
                AND held.version <> (condition->>'version')::bigint)
            OR (condition->>'kind' = 'value'
                AND held.value <> decode(condition->>'value', 'hex'))
            OR (condition->>'kind' = 'own_session'
                AND held.session IS DISTINCT FROM own) THEN
            RETURN 'conflict';
        END IF;
    END LOOP;
    FOR write IN SELECT * FROM jsonb_array_elements(body->'writes') LOOP
        IF write->>'kind' = 'put' THEN
            revision := nextval('recon_coord_revision');
            INSERT INTO recon_coord_entries (prefix, key, value, version, created, session)
            VALUES (p, write->>'key', decode(write->>'value', 'hex'), revision, revision,
                    CASE WHEN (write->>'session_bound')::boolean THEN own END)
            ON CONFLICT (prefix, key) DO UPDATE
                SET value = EXCLUDED.value, version = EXCLUDED.version,
                    session = EXCLUDED.session;
        ELSIF write->>'kind' = 'delete' THEN
            DELETE FROM recon_coord_entries WHERE prefix = p AND key = write->>'key';
        ELSE
            DELETE FROM recon_coord_entries
                WHERE prefix = p AND key >= write->>'start' AND key < write->>'end';
        END IF;
    END LOOP;
    RETURN 'done';
END
$$";

/// Creates the coordinator's tables and function where missing (every
/// member does on connect; an operator may run it ahead with a role
/// allowed to create them).
pub async fn ensure(db: &DatabaseConnection) -> Result<()> {
    let database = |operation| move |source| Error::Database { operation, source };
    let txn = db.begin().await.map_err(database("begin schema"))?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
        .await
        .map_err(database("lock schema"))?;
    for statement in STATEMENTS {
        txn.execute_unprepared(statement)
            .await
            .map_err(database("create schema"))?;
    }
    txn.commit().await.map_err(database("commit schema"))
}
