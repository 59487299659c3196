-- create_tables
-- create_schema
CREATE SCHEMA IF NOT EXISTS "Sales Mart";
-- create_final
CREATE TABLE IF NOT EXISTS "Sales Mart"."Order" ("order" BIGINT, "Note ""quoted""" TEXT, "amount" DECIMAL(12,2), "_op" TEXT, "_lsn" BIGINT, "_commit_ts" TIMESTAMP);
-- create_tombstones
CREATE TABLE IF NOT EXISTS "Sales Mart"."Order__sluice_deleted" ("order" BIGINT, "_lsn" BIGINT, sluice_truncate BOOLEAN NOT NULL, sluice_at TIMESTAMP);
-- create_stage_schema
CREATE SCHEMA IF NOT EXISTS "stg";
-- create_stage
CREATE TABLE IF NOT EXISTS "stg"."Order Stage" ("order" BIGINT, "Note ""quoted""" TEXT, "amount" DECIMAL(12,2), "_op" TEXT, "_lsn" BIGINT, "_commit_ts" TIMESTAMP, "_unchanged" TEXT);
-- load
-- add_column amount
ALTER TABLE "Sales Mart"."Order" ADD COLUMN "amount" DECIMAL(12,2);
-- add_stage_column amount
ALTER TABLE "stg"."Order Stage" ADD COLUMN "amount" DECIMAL(12,2);
-- clear_stage_before
DELETE FROM "stg"."Order Stage";
-- create_group_stage 0
CREATE TEMP TABLE "sluice_stage_g0" ("order" BIGINT, "Note ""quoted""" TEXT, "amount" DECIMAL(12,2), "_op" TEXT, "_lsn" BIGINT, "_commit_ts" TIMESTAMP, "_unchanged" TEXT) ON COMMIT DROP;
-- copy_group 0
COPY "sluice_stage_g0" FROM STDIN WITH (FORMAT csv);
-- stage_group
INSERT INTO "stg"."Order Stage" ("order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts", "_unchanged") SELECT "order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts", "_unchanged" FROM "sluice_stage_g0";
-- drop_group_stage 0
DROP TABLE "sluice_stage_g0";
-- create_group_stage 1
CREATE TEMP TABLE "sluice_stage_g1" ("order" BIGINT, "Note ""quoted""" TEXT, "_op" TEXT, "_lsn" BIGINT, "_commit_ts" TIMESTAMP, "_unchanged" TEXT) ON COMMIT DROP;
-- copy_group 1
COPY "sluice_stage_g1" FROM STDIN WITH (FORMAT csv);
-- stage_group
INSERT INTO "stg"."Order Stage" ("order", "Note ""quoted""", "_op", "_lsn", "_commit_ts", "_unchanged") SELECT "order", "Note ""quoted""", "_op", "_lsn", "_commit_ts", "_unchanged" FROM "sluice_stage_g1";
-- drop_group_stage 1
DROP TABLE "sluice_stage_g1";
-- drop_null_keys
DELETE FROM "stg"."Order Stage" WHERE "_lsn" IS NULL OR (("order" IS NULL) AND ("_op" IS NULL OR "_op" <> 't'));
-- record_truncate
INSERT INTO "Sales Mart"."Order__sluice_deleted" ("_lsn", sluice_truncate, sluice_at) SELECT MAX("_lsn"), TRUE, LOCALTIMESTAMP FROM "stg"."Order Stage" WHERE "_op" = 't' HAVING COUNT(*) > 0;
-- drop_truncate_markers
DELETE FROM "stg"."Order Stage" WHERE "_op" = 't';
-- create_batch
CREATE TEMP TABLE "sluice_batch" ("order" BIGINT, "Note ""quoted""" TEXT, "amount" DECIMAL(12,2), "_op" TEXT, "_lsn" BIGINT, "_commit_ts" TIMESTAMP, "_unchanged" TEXT, sluice_rn BIGINT) ON COMMIT DROP;
-- dedup_batch
INSERT INTO "sluice_batch" ("order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts", "_unchanged", sluice_rn) SELECT "order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts", "_unchanged", ROW_NUMBER() OVER (PARTITION BY "order" ORDER BY "_lsn" DESC) FROM "stg"."Order Stage";
-- drop_truncated_from_batch
DELETE FROM "sluice_batch" WHERE sluice_rn = 1 AND "_lsn" <= (SELECT MAX("_lsn") FROM "Sales Mart"."Order__sluice_deleted" WHERE sluice_truncate);
-- drop_truncated_from_final
DELETE FROM "Sales Mart"."Order" WHERE "_lsn" <= (SELECT MAX("_lsn") FROM "Sales Mart"."Order__sluice_deleted" WHERE sluice_truncate);
-- drop_stale_against_final
DELETE FROM "sluice_batch" USING "Sales Mart"."Order" f WHERE "sluice_batch".sluice_rn = 1 AND f."order" = "sluice_batch"."order" AND f."_lsn" >= "sluice_batch"."_lsn";
-- drop_stale_against_tombstones
DELETE FROM "sluice_batch" USING "Sales Mart"."Order__sluice_deleted" t WHERE "sluice_batch".sluice_rn = 1 AND NOT t.sluice_truncate AND t."order" = "sluice_batch"."order" AND t."_lsn" >= "sluice_batch"."_lsn";
-- create_resolved
CREATE TEMP TABLE "sluice_resolved" ("order" BIGINT, "Note ""quoted""" TEXT, "amount" DECIMAL(12,2), sluice_missing TEXT) ON COMMIT DROP;
-- resolve_unchanged
INSERT INTO "sluice_resolved" ("order", "Note ""quoted""", "amount", sluice_missing) SELECT b."order", CASE WHEN POSITION(',note,' IN ',' || COALESCE(b."_unchanged", '') || ',') > 0 THEN CASE WHEN s.sluice_s0 IS NULL THEN f."Note ""quoted""" ELSE x0."Note ""quoted""" END ELSE b."Note ""quoted""" END, CASE WHEN POSITION(',amount,' IN ',' || COALESCE(b."_unchanged", '') || ',') > 0 THEN CASE WHEN s.sluice_s1 IS NULL THEN f."amount" ELSE x1."amount" END ELSE b."amount" END, CASE WHEN b."_op" = 'd' THEN NULL ELSE NULLIF(LTRIM(CASE WHEN POSITION(',note,' IN ',' || COALESCE(b."_unchanged", '') || ',') > 0 AND ((s.sluice_s0 IS NULL AND f."_lsn" IS NULL) OR x0."_op" = 'd') THEN ',note' ELSE '' END || CASE WHEN POSITION(',amount,' IN ',' || COALESCE(b."_unchanged", '') || ',') > 0 AND ((s.sluice_s1 IS NULL AND f."_lsn" IS NULL) OR x1."_op" = 'd') THEN ',amount' ELSE '' END, ','), '') END FROM "sluice_batch" b LEFT JOIN (SELECT c."order", MIN(CASE WHEN c."_op" = 'd' OR NOT (POSITION(',note,' IN ',' || COALESCE(c."_unchanged", '') || ',') > 0) THEN c.sluice_rn END) AS sluice_s0, MIN(CASE WHEN c."_op" = 'd' OR NOT (POSITION(',amount,' IN ',' || COALESCE(c."_unchanged", '') || ',') > 0) THEN c.sluice_rn END) AS sluice_s1 FROM "sluice_batch" c LEFT JOIN "Sales Mart"."Order" f ON f."order" = c."order" LEFT JOIN "Sales Mart"."Order__sluice_deleted" t ON NOT t.sluice_truncate AND t."order" = c."order" CROSS JOIN (SELECT MAX("_lsn") AS sluice_v FROM "Sales Mart"."Order__sluice_deleted" WHERE sluice_truncate) tr WHERE c.sluice_rn > 1 AND (f."_lsn" IS NULL OR c."_lsn" > f."_lsn") AND (t."_lsn" IS NULL OR c."_lsn" > t."_lsn") AND (tr.sluice_v IS NULL OR c."_lsn" > tr.sluice_v) GROUP BY c."order") s ON s."order" = b."order" LEFT JOIN "sluice_batch" x0 ON x0."order" = b."order" AND x0.sluice_rn = s.sluice_s0 LEFT JOIN "sluice_batch" x1 ON x1."order" = b."order" AND x1.sluice_rn = s.sluice_s1 LEFT JOIN "Sales Mart"."Order" f ON f."order" = b."order" WHERE b.sluice_rn = 1 AND b."_unchanged" IS NOT NULL;
-- apply_resolved
UPDATE "sluice_batch" SET "Note ""quoted""" = r."Note ""quoted""", "amount" = r."amount", "_unchanged" = r.sluice_missing FROM "sluice_resolved" r WHERE "sluice_batch"."order" = r."order" AND "sluice_batch".sluice_rn = 1;
-- drop_resolved
DROP TABLE "sluice_resolved";
-- drop_duplicates
DELETE FROM "sluice_batch" WHERE sluice_rn > 1;
-- unresolved_changes
SELECT CAST("order" AS TEXT), CAST("_lsn" AS TEXT), "_unchanged" FROM "sluice_batch" WHERE "_unchanged" IS NOT NULL;
-- delete_replaced
DELETE FROM "Sales Mart"."Order" USING "sluice_batch" b WHERE "Sales Mart"."Order"."order" = b."order" AND b."_unchanged" IS NULL;
-- replace_tombstones
DELETE FROM "Sales Mart"."Order__sluice_deleted" USING "sluice_batch" b WHERE NOT "Sales Mart"."Order__sluice_deleted".sluice_truncate AND "Sales Mart"."Order__sluice_deleted"."order" = b."order" AND b."_op" = 'd';
-- record_tombstones
INSERT INTO "Sales Mart"."Order__sluice_deleted" ("order", "_lsn", sluice_truncate, sluice_at) SELECT "order", "_lsn", FALSE, LOCALTIMESTAMP FROM "sluice_batch" WHERE "_op" = 'd';
-- insert
INSERT INTO "Sales Mart"."Order" ("order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts") SELECT "order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts" FROM "sluice_batch" WHERE ("_op" IS NULL OR "_op" NOT IN ('d', 't')) AND "_unchanged" IS NULL;
-- drop_batch
DROP TABLE "sluice_batch";
-- clear_stage
DELETE FROM "stg"."Order Stage";
-- purge_tombstones
DELETE FROM "Sales Mart"."Order__sluice_deleted" WHERE NOT sluice_truncate AND sluice_at < LOCALTIMESTAMP - INTERVAL '30 days';
-- after the commit
-- purge_tombstones
DELETE FROM "Sales Mart"."Order__sluice_deleted" WHERE NOT sluice_truncate AND sluice_at < LOCALTIMESTAMP - INTERVAL '30 days';
