-- create_tables
-- create_schema
CREATE SCHEMA IF NOT EXISTS "Sales Mart";
-- create_final
CREATE TABLE IF NOT EXISTS "Sales Mart"."Order" ("order" BIGINT, "Note ""quoted""" VARCHAR(65535), "amount" DECIMAL(12,2), "_op" VARCHAR(65535), "_lsn" BIGINT, "_commit_ts" TIMESTAMP);
-- create_tombstones
CREATE TABLE IF NOT EXISTS "Sales Mart"."Order__sluice_deleted" ("order" BIGINT, "_lsn" BIGINT, sluice_truncate BOOLEAN NOT NULL, sluice_at TIMESTAMP);
-- create_stage_schema
CREATE SCHEMA IF NOT EXISTS "stg";
-- create_stage
CREATE TABLE IF NOT EXISTS "stg"."Order Stage" ("order" BIGINT, "Note ""quoted""" VARCHAR(65535), "amount" DECIMAL(12,2), "_op" VARCHAR(65535), "_lsn" BIGINT, "_commit_ts" TIMESTAMP);
-- load
-- case_sensitive_identifiers
SET enable_case_sensitive_identifier TO true;
-- add_column amount
ALTER TABLE "Sales Mart"."Order" ADD COLUMN "amount" DECIMAL(12,2);
-- add_stage_column amount
ALTER TABLE "stg"."Order Stage" ADD COLUMN "amount" DECIMAL(12,2);
-- clear_stage_before
DELETE FROM "stg"."Order Stage";
-- create_group_stage 0
CREATE TEMP TABLE "sluice_stage_g0" ("order" BIGINT, "Note ""quoted""" VARCHAR(65535), "amount" DECIMAL(12,2), "_op" VARCHAR(65535), "_lsn" BIGINT, "_commit_ts" TIMESTAMP);
-- copy_group 0
COPY "sluice_stage_g0" FROM 's3://lake/loads/t/b/copy-0.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-copy' FORMAT AS PARQUET MANIFEST;
-- stage_group
INSERT INTO "stg"."Order Stage" ("order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts") SELECT "order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts" FROM "sluice_stage_g0";
-- drop_group_stage 0
DROP TABLE "sluice_stage_g0";
-- create_group_stage 1
CREATE TEMP TABLE "sluice_stage_g1" ("order" BIGINT, "Note ""quoted""" VARCHAR(65535), "_op" VARCHAR(65535), "_lsn" BIGINT, "_commit_ts" TIMESTAMP);
-- copy_group 1
COPY "sluice_stage_g1" FROM 's3://lake/loads/t/b/copy-1.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-copy' FORMAT AS PARQUET MANIFEST;
-- stage_group
INSERT INTO "stg"."Order Stage" ("order", "Note ""quoted""", "_op", "_lsn", "_commit_ts") SELECT "order", "Note ""quoted""", "_op", "_lsn", "_commit_ts" FROM "sluice_stage_g1";
-- drop_group_stage 1
DROP TABLE "sluice_stage_g1";
-- drop_null_keys
DELETE FROM "stg"."Order Stage" WHERE "_lsn" IS NULL OR (("order" IS NULL) AND ("_op" IS NULL OR "_op" <> 't'));
-- record_truncate
INSERT INTO "Sales Mart"."Order__sluice_deleted" ("_lsn", sluice_truncate, sluice_at) SELECT MAX("_lsn"), TRUE, GETDATE() FROM "stg"."Order Stage" WHERE "_op" = 't' HAVING COUNT(*) > 0;
-- drop_truncate_markers
DELETE FROM "stg"."Order Stage" WHERE "_op" = 't';
-- create_batch
CREATE TEMP TABLE "sluice_batch" ("order" BIGINT, "Note ""quoted""" VARCHAR(65535), "amount" DECIMAL(12,2), "_op" VARCHAR(65535), "_lsn" BIGINT, "_commit_ts" TIMESTAMP, sluice_rn BIGINT);
-- dedup_batch
INSERT INTO "sluice_batch" ("order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts", sluice_rn) SELECT "order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts", ROW_NUMBER() OVER (PARTITION BY "order" ORDER BY "_lsn" DESC) FROM "stg"."Order Stage";
-- drop_duplicates
DELETE FROM "sluice_batch" WHERE sluice_rn > 1;
-- drop_truncated_from_batch
DELETE FROM "sluice_batch" WHERE "_lsn" <= (SELECT MAX("_lsn") FROM "Sales Mart"."Order__sluice_deleted" WHERE sluice_truncate);
-- drop_truncated_from_final
DELETE FROM "Sales Mart"."Order" WHERE "_lsn" <= (SELECT MAX("_lsn") FROM "Sales Mart"."Order__sluice_deleted" WHERE sluice_truncate);
-- drop_stale_against_final
DELETE FROM "sluice_batch" USING "Sales Mart"."Order" f WHERE f."order" = "sluice_batch"."order" AND f."_lsn" >= "sluice_batch"."_lsn";
-- drop_stale_against_tombstones
DELETE FROM "sluice_batch" USING "Sales Mart"."Order__sluice_deleted" t WHERE NOT t.sluice_truncate AND t."order" = "sluice_batch"."order" AND t."_lsn" >= "sluice_batch"."_lsn";
-- delete_replaced
DELETE FROM "Sales Mart"."Order" USING "sluice_batch" b WHERE "Sales Mart"."Order"."order" = b."order";
-- replace_tombstones
DELETE FROM "Sales Mart"."Order__sluice_deleted" USING "sluice_batch" b WHERE NOT "Sales Mart"."Order__sluice_deleted".sluice_truncate AND "Sales Mart"."Order__sluice_deleted"."order" = b."order" AND b."_op" = 'd';
-- record_tombstones
INSERT INTO "Sales Mart"."Order__sluice_deleted" ("order", "_lsn", sluice_truncate, sluice_at) SELECT "order", "_lsn", FALSE, GETDATE() FROM "sluice_batch" WHERE "_op" = 'd';
-- insert
INSERT INTO "Sales Mart"."Order" ("order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts") SELECT "order", "Note ""quoted""", "amount", "_op", "_lsn", "_commit_ts" FROM "sluice_batch" WHERE "_op" IS NULL OR "_op" NOT IN ('d', 't');
-- drop_batch
DROP TABLE "sluice_batch";
-- clear_stage
DELETE FROM "stg"."Order Stage";
-- purge_tombstones
DELETE FROM "Sales Mart"."Order__sluice_deleted" WHERE NOT sluice_truncate AND sluice_at < DATEADD(day, -30, GETDATE());
-- after the commit
-- purge_tombstones
DELETE FROM "Sales Mart"."Order__sluice_deleted" WHERE NOT sluice_truncate AND sluice_at < DATEADD(day, -30, GETDATE());
