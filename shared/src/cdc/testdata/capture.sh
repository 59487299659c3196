#!/usr/bin/env bash
# Regenerates the pgoutput fixtures of the decoder's unit tests from a real cluster with
# wal_level = logical: dml.copy is the COPY BINARY output of one peek of a pgoutput slot (what
# the wal-decoder reads), dml.test_decoding.txt the same changes read through a test_decoding
# slot created at the same point: an independent account of each change's LSN, xid, commit
# time and values that the tests check the decoder against.
#
#   SLUICE_TEST_PG_LOGICAL_URL=postgres://postgres@127.0.0.1:PORT/postgres shared/src/cdc/testdata/capture.sh
#
# Everything it creates (schema cdcfx, its publication, slots and origin) is dropped at the end.
set -euo pipefail
url=${SLUICE_TEST_PG_LOGICAL_URL:?set SLUICE_TEST_PG_LOGICAL_URL to a wal_level = logical cluster}
here=$(cd "$(dirname "$0")" && pwd)
psql=(psql "$url" -X -v ON_ERROR_STOP=1 -q)

cleanup() {
  "${psql[@]}" <<'SQL' || true
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('cdcfx_slot', 'cdcfx_slot_td');
SELECT pg_replication_origin_drop('cdcfx_origin') FROM pg_replication_origin WHERE roname = 'cdcfx_origin';
DROP PUBLICATION IF EXISTS cdcfx_pub;
DROP SCHEMA IF EXISTS cdcfx CASCADE;
SQL
}
trap cleanup EXIT
cleanup

"${psql[@]}" <<'SQL'
CREATE SCHEMA cdcfx;
CREATE TYPE cdcfx.mood AS ENUM ('ok', 'sad');
-- REPLICA IDENTITY DEFAULT (the primary key).
CREATE TABLE cdcfx.a (id int PRIMARY KEY, name text, mood cdcfx.mood, amount numeric(12,2),
                      ts timestamptz, doc jsonb, tags int[], raw bytea, big text);
-- Stored out of line without compression: a 2,560-byte value is TOASTed, and an update that
-- leaves it alone sends it as unchanged ('u').
ALTER TABLE cdcfx.a ALTER big SET STORAGE EXTERNAL;
CREATE TABLE cdcfx.b (id int PRIMARY KEY, v text, big text);
ALTER TABLE cdcfx.b REPLICA IDENTITY FULL;
ALTER TABLE cdcfx.b ALTER big SET STORAGE EXTERNAL;
CREATE PUBLICATION cdcfx_pub FOR TABLE cdcfx.a, cdcfx.b;
SELECT pg_create_logical_replication_slot('cdcfx_slot', 'pgoutput');
SELECT pg_create_logical_replication_slot('cdcfx_slot_td', 'test_decoding');
SQL

"${psql[@]}" <<'SQL'
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO cdcfx.a VALUES (1, 'one', 'ok', 12.50, '2026-11-26 09:00:00.123456+00',
  '{"a": 1, "b": [true, null]}', '{1,2,NULL}', '\x00ff', repeat('0123456789abcdef', 160));
INSERT INTO cdcfx.a (id, name, big) VALUES (2, 'two', repeat('fedcba9876543210', 160));
INSERT INTO cdcfx.b VALUES (1, 'x', repeat('0123456789abcdef', 160));
COMMIT;
-- Leave the TOASTed column alone: DEFAULT sends no old row, FULL the whole old row.
BEGIN;
UPDATE cdcfx.a SET name = 'uno' WHERE id = 1;
UPDATE cdcfx.b SET v = 'y' WHERE id = 1;
COMMIT;
-- Key changes: DEFAULT sends the old key ('K'), FULL the old row ('O').
UPDATE cdcfx.a SET id = 3 WHERE id = 2;
UPDATE cdcfx.b SET id = 2 WHERE id = 1;
BEGIN;
DELETE FROM cdcfx.a WHERE id = 3;
DELETE FROM cdcfx.b WHERE id = 2;
SELECT pg_logical_emit_message(true, 'sluice', 'x');
COMMIT;
SELECT pg_logical_emit_message(false, 'sluice', 'nt');
TRUNCATE cdcfx.a, cdcfx.b;
-- A transaction replayed from another node carries an Origin message.
SELECT pg_replication_origin_create('cdcfx_origin');
SELECT pg_replication_origin_session_setup('cdcfx_origin');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
INSERT INTO cdcfx.a (id, name) VALUES (10, 'from origin');
COMMIT;
SELECT pg_replication_origin_session_reset();
SQL

# The wal-decoder's session settings (cdc::copy::SESSION_SETTINGS) and its peek.
"${psql[@]}" >"$here/dml.copy" <<'SQL'
SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres';
SET extra_float_digits = 3; SET bytea_output = 'hex';
COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes('cdcfx_slot', NULL, NULL,
  'proto_version', '1', 'publication_names', 'cdcfx_pub', 'messages', 'true')) TO STDOUT (FORMAT binary);
SQL

"${psql[@]}" -At >"$here/dml.test_decoding.txt" <<'SQL'
SET TimeZone = 'UTC'; SET DateStyle = 'ISO';
SELECT lsn, xid, data FROM pg_logical_slot_peek_changes('cdcfx_slot_td', NULL, NULL,
  'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1');
SQL
ls -l "$here/dml.copy" "$here/dml.test_decoding.txt"
