-- create_tables
-- create_schema
CREATE SCHEMA IF NOT EXISTS "lake";
-- create_final
CREATE TABLE IF NOT EXISTS "lake"."customers" ("customer_id" BIGINT, "email_hash" TEXT, "date_of_birth_age_band" TEXT, "signup_date" TIMESTAMP, "loyalty_tier" TEXT, "lifetime_spend" DECIMAL(12,2), "address_city" TEXT, "address_postcode" TEXT, "address_geo_lat" DOUBLE PRECISION, "address_geo_lon" DOUBLE PRECISION, "address_tags" TEXT, "updated_at" TIMESTAMP);
-- create_tombstones
CREATE TABLE IF NOT EXISTS "lake"."customers__sluice_deleted" ("customer_id" BIGINT, "updated_at" TIMESTAMP, sluice_truncate BOOLEAN NOT NULL, sluice_at TIMESTAMP);
-- load
-- lock
LOCK TABLE "lake"."customers" IN EXCLUSIVE MODE;
-- create_stage
CREATE TEMP TABLE "sluice_stage" ("customer_id" BIGINT, "email_hash" TEXT, "date_of_birth_age_band" TEXT, "signup_date" TIMESTAMP, "loyalty_tier" TEXT, "lifetime_spend" DECIMAL(12,2), "address_city" TEXT, "address_postcode" TEXT, "address_geo_lat" DOUBLE PRECISION, "address_geo_lon" DOUBLE PRECISION, "address_tags" TEXT, "updated_at" TIMESTAMP) ON COMMIT DROP;
-- copy
COPY "sluice_stage" FROM STDIN WITH (FORMAT csv);
-- drop_null_keys
DELETE FROM "sluice_stage" WHERE "updated_at" IS NULL OR "customer_id" IS NULL;
-- create_batch
CREATE TEMP TABLE "sluice_batch" ("customer_id" BIGINT, "email_hash" TEXT, "date_of_birth_age_band" TEXT, "signup_date" TIMESTAMP, "loyalty_tier" TEXT, "lifetime_spend" DECIMAL(12,2), "address_city" TEXT, "address_postcode" TEXT, "address_geo_lat" DOUBLE PRECISION, "address_geo_lon" DOUBLE PRECISION, "address_tags" TEXT, "updated_at" TIMESTAMP, sluice_rn BIGINT) ON COMMIT DROP;
-- dedup_batch
INSERT INTO "sluice_batch" ("customer_id", "email_hash", "date_of_birth_age_band", "signup_date", "loyalty_tier", "lifetime_spend", "address_city", "address_postcode", "address_geo_lat", "address_geo_lon", "address_tags", "updated_at", sluice_rn) SELECT "customer_id", "email_hash", "date_of_birth_age_band", "signup_date", "loyalty_tier", "lifetime_spend", "address_city", "address_postcode", "address_geo_lat", "address_geo_lon", "address_tags", "updated_at", ROW_NUMBER() OVER (PARTITION BY "customer_id" ORDER BY "updated_at" DESC) FROM "sluice_stage";
-- drop_truncated_from_batch
DELETE FROM "sluice_batch" WHERE sluice_rn = 1 AND "updated_at" <= (SELECT MAX("updated_at") FROM "lake"."customers__sluice_deleted" WHERE sluice_truncate);
-- drop_truncated_from_final
DELETE FROM "lake"."customers" WHERE "updated_at" <= (SELECT MAX("updated_at") FROM "lake"."customers__sluice_deleted" WHERE sluice_truncate);
-- drop_stale_against_final
DELETE FROM "sluice_batch" USING "lake"."customers" f WHERE "sluice_batch".sluice_rn = 1 AND f."customer_id" = "sluice_batch"."customer_id" AND f."updated_at" >= "sluice_batch"."updated_at";
-- drop_stale_against_tombstones
DELETE FROM "sluice_batch" USING "lake"."customers__sluice_deleted" t WHERE "sluice_batch".sluice_rn = 1 AND NOT t.sluice_truncate AND t."customer_id" = "sluice_batch"."customer_id" AND t."updated_at" >= "sluice_batch"."updated_at";
-- drop_duplicates
DELETE FROM "sluice_batch" WHERE sluice_rn > 1;
-- delete_replaced
DELETE FROM "lake"."customers" USING "sluice_batch" b WHERE "lake"."customers"."customer_id" = b."customer_id";
-- insert
INSERT INTO "lake"."customers" ("customer_id", "email_hash", "date_of_birth_age_band", "signup_date", "loyalty_tier", "lifetime_spend", "address_city", "address_postcode", "address_geo_lat", "address_geo_lon", "address_tags", "updated_at") SELECT "customer_id", "email_hash", "date_of_birth_age_band", "signup_date", "loyalty_tier", "lifetime_spend", "address_city", "address_postcode", "address_geo_lat", "address_geo_lon", "address_tags", "updated_at" FROM "sluice_batch";
-- drop_batch
DROP TABLE "sluice_batch";
-- drop_stage
DROP TABLE "sluice_stage";
-- purge_tombstones
DELETE FROM "lake"."customers__sluice_deleted" WHERE NOT sluice_truncate AND sluice_at < LOCALTIMESTAMP - INTERVAL '30 days';
-- after the commit
-- purge_tombstones
DELETE FROM "lake"."customers__sluice_deleted" WHERE NOT sluice_truncate AND sluice_at < LOCALTIMESTAMP - INTERVAL '30 days';
