"""Sluice's Glue (Spark) transform: the Rust `transform` for objects too large for a Lambda.

One source object in, the same lake out as the Rust transform writes: typed, cleaned,
deduplicated, PII-free Parquet under `curated/<table>/year=YYYY/month=MM/<stem>-<hash>-<part>`
(ZSTD, timestamps as INT64 TIMESTAMP(MICROS, UTC)), the quarantine records, the Glue
partitions, and the manifest, written last (the loader's trigger). The row semantics live in
`sluice_rows.py` (pure Python, tested against the Rust text); this file runs them on Spark.

Order of effects, as `shared/src/transform/mod.rs`:
1. catalog table ensured (Glue mode; a type change stops here, the object quarantined);
2. Parquet files written under deterministic keys (Spark writes to a scratch prefix first,
   then each file is moved to its key); the quarantine object written, or a stale one deleted;
3. files of the previous manifest this run did not write deleted;
4. partitions registered (Glue mode);
5. manifest written, last.

Modes:
- Glue: `--source_bucket B --source_key K --table T --pipeline s3://…/pipeline.toml` (what the
  Rust transform passes to StartJobRun); the hash key from the pipeline's `[hash_key] secret`
  (Secrets Manager). A `[hash_key] file` is a local path, so it works in local mode only.
- Local (tests, the golden cases): `--local --pipeline P --lake DIR --source-key K
  [--hash-key-file F]`; no catalog. `--cases DIR --out DIR` runs every golden case in one
  Spark session.

Deploy: this file is the job's script; `sluice_rows.py` goes in `--extra-py-files`, and
`--additional-python-modules xxhash==4.1.0` (plus `tomli` on Python 3.10 runtimes).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sluice_rows as rows  # noqa: E402

log = logging.getLogger("sluice.glue")

# --------------------------------------------------------------------------------------------
# The lake: a local directory or an S3 bucket, behind the few calls the job makes.
# --------------------------------------------------------------------------------------------


class LocalLake:
    """A local lake: key `a/b` is the file `<root>/a/b` (as `lake::LocalStore`)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def path(self, key: str) -> str:
        return os.path.join(self.root, key.lstrip("/"))

    def spark_uri(self, key: str) -> str:
        return "file://" + self.path(key)

    def open(self, key: str):
        return open(self.path(key), "rb")

    def head(self, key: str) -> tuple[int, Optional[str]]:
        st = os.stat(self.path(key))
        return st.st_size, _local_etag(st)

    def get_bytes(self, key: str) -> Optional[bytes]:
        try:
            with open(self.path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put(self, key: str, body: bytes) -> Optional[str]:
        p = self.path(key)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = p + ".sluice-tmp"
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, p)
        return _local_etag(os.stat(p))

    def put_file(self, key: str, path: str) -> Optional[str]:
        """Moves the local file `path` in as `key` (the file is gone afterwards)."""
        dst = self.path(key)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(path, dst)
        return _local_etag(os.stat(dst))

    def delete(self, key: str) -> None:
        try:
            os.remove(self.path(key))
        except FileNotFoundError:
            pass

    def move_in(self, scratch_uri: str, key: str) -> tuple[int, Optional[str]]:
        src = scratch_uri
        for scheme in ("file://", "file:"):
            if src.startswith(scheme):
                src = src[len(scheme):]
                break
        dst = self.path(key)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
        st = os.stat(dst)
        return st.st_size, _local_etag(st)

    def url(self, key: str) -> str:
        return self.path(key)


def _local_etag(st: os.stat_result) -> str:
    """`lake::local` `etag_of`: size and mtime in nanoseconds, both in hex."""
    return "%x-%x" % (st.st_size, st.st_mtime_ns)


class S3Lake:
    """The lake bucket through boto3 (Glue mode)."""

    def __init__(self, bucket: str, s3):
        self.bucket = bucket
        self.s3 = s3

    def spark_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def open(self, key: str):
        return _BodyReader(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"])

    def head(self, key: str) -> tuple[int, Optional[str]]:
        h = self.s3.head_object(Bucket=self.bucket, Key=key)
        return h["ContentLength"], _etag(h.get("ETag"))

    def get_bytes(self, key: str) -> Optional[bytes]:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def put(self, key: str, body: bytes) -> Optional[str]:
        return _etag(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body).get("ETag"))

    def put_file(self, key: str, path: str) -> Optional[str]:
        """Uploads the local file `path` as `key` and removes it. boto3's managed transfer goes
        multipart past its threshold, so the object is not held by the 5 GB single-PUT limit nor
        read into memory."""
        try:
            self.s3.upload_file(path, self.bucket, key)
        finally:
            os.remove(path)
        return _etag(self.s3.head_object(Bucket=self.bucket, Key=key).get("ETag"))

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def move_in(self, scratch_uri: str, key: str) -> tuple[int, Optional[str]]:
        if scratch_uri.startswith("file:"):
            # A local scratch (SLUICE_GLUE_TEMP=file:///…): a single-machine run against S3.
            path = scratch_uri[len("file://"):] if scratch_uri.startswith("file://") else scratch_uri[len("file:"):]
            self.s3.upload_file(path, self.bucket, key)
            os.remove(path)
            h = self.s3.head_object(Bucket=self.bucket, Key=key)
            return h["ContentLength"], _etag(h.get("ETag"))
        bucket, skey = _split_s3(scratch_uri)
        # Multipart-aware managed copy: Parquet files may pass the 5 GB CopyObject limit.
        self.s3.copy({"Bucket": bucket, "Key": skey}, self.bucket, key)
        h = self.s3.head_object(Bucket=self.bucket, Key=key)
        self.s3.delete_object(Bucket=bucket, Key=skey)
        return h["ContentLength"], _etag(h.get("ETag"))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class _BodyReader(io.RawIOBase):
    """A GetObject body as a raw stream, so it can be buffered (and gunzipped) like a file."""

    def __init__(self, body):
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.body.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


def _etag(e: Optional[str]) -> Optional[str]:
    return e.strip('"') if e else None


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


# --------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------


def spark_session(local: bool):
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName("sluice-transform")
    if local:
        b = (
            b.master("local[1]")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.default.parallelism", "1")
            .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        )
    spark = b.getOrCreate()
    conf = spark.conf
    conf.set("spark.sql.session.timeZone", "UTC")
    # INT64 TIMESTAMP(MICROS, isAdjustedToUTC=true): INT96 and nanoseconds read wrong in Athena.
    conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    # Proleptic Gregorian, as the Rust writer: no rebasing of dates before 1582.
    conf.set("spark.sql.parquet.datetimeRebaseModeInWrite", "CORRECTED")
    conf.set("spark.sql.parquet.int96RebaseModeInWrite", "CORRECTED")
    conf.set("spark.sql.parquet.compression.codec", "zstd")
    conf.set("spark.sql.sources.partitionOverwriteMode", "static")
    # No _SUCCESS marker, no summary files in the scratch output.
    spark.sparkContext._jsc.hadoopConfiguration().set("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    spark.sparkContext._jsc.hadoopConfiguration().set("parquet.summary.metadata.level", "NONE")
    spark.sparkContext.setLogLevel("WARN")
    return spark


def spark_type(ty: rows.ColType):
    from pyspark.sql import types as T

    return {
        "int": T.LongType(),
        "float": T.DoubleType(),
        "bool": T.BooleanType(),
        "string": T.StringType(),
        "json": T.StringType(),
        "binary": T.BinaryType(),
        # Dates (days) and timestamps (µs) travel as longs and are converted in the JVM.
        "date": T.LongType(),
        "timestamp": T.LongType(),
    }.get(ty.kind) or T.DecimalType(ty.precision, ty.scale)


@dataclass
class Outcome:
    counts: dict
    files: list
    partitions: list
    quarantine_key: Optional[str]
    stale_deleted: int


def _decode_partition(lake_factory, source_key, table, skip_header, plan, header, hash_key):
    """The executor side: read the object through, one record at a time, and type each."""

    def run(_):
        lake = lake_factory()
        stream = rows.open_source(lake.open(source_key), source_key)
        try:
            it = rows.records(stream, table)
            if skip_header:
                next(it, None)
            for row_no, rec in enumerate(it):
                yield rows.process_record(plan, header, source_key, row_no, rec, hash_key)
        finally:
            stream.close()

    return run


def transform(spark, lake, lake_factory, pipeline: rows.Pipeline, source_key: str,
              hash_key: Optional[bytes], catalog=None) -> Outcome:
    """Transforms one object of the lake, in the order of effects at the top of this file."""
    pipeline.refuse_cdc(source_key)
    table = pipeline.table_for_key(source_key)
    if table is None:
        raise rows.ConfigError(
            f"no table in the pipeline owns {source_key}: known raw prefixes are "
            + ", ".join(t.raw_prefix for t in pipeline.tables)
        )
    plan = rows.compile_plan(table)
    if plan.needs_hash_key() and hash_key is None:
        raise rows.ConfigError("the table hashes PII but the hash key is missing or unusable")
    keys = rows.ObjectKeys.new(table.name, source_key)
    source_bytes, source_etag = lake.head(source_key)

    # 1. The catalog table, first: an incompatible change stops here, before any file.
    if catalog is not None:
        catalog.ensure_table(lake, plan, keys, source_key)

    # The header is read on the driver (the first record only): it maps the columns for every
    # executor, and a missing required column fails the object before anything is written.
    header = rows.fields_without_header(plan)
    skip_header = header is None
    if header is None:
        stream = rows.open_source(lake.open(source_key), source_key)
        try:
            first = next(rows.records(stream, table), None)
        finally:
            stream.close()
        header = (
            rows.read_header(plan, first, source_key)
            if first is not None
            else rows.Header([None] * len(plan.inputs), 0)
        )

    sc = spark.sparkContext
    sc.addPyFile(rows.__file__)
    # One task reads the object (a record may span lines, so it is split in order); the typed
    # records then spread over the cluster.
    records = sc.parallelize([0], 1).flatMap(
        _decode_partition(lake_factory, source_key, table, skip_header, plan, header, hash_key)
    )
    parallel = max(1, min(source_bytes // (64 * 1024 * 1024), sc.defaultParallelism * 4))
    if parallel > 1:
        records = records.repartition(parallel)
    from pyspark import StorageLevel

    records = records.persist(StorageLevel.MEMORY_AND_DISK)

    kinds = records.map(lambda r: r[0]).countByValue()
    rows_read = sum(kinds.values())
    rows_quarantined = kinds.get("q", 0)

    ok = records.filter(lambda r: r[0] == "ok")
    if plan.key_slots:
        latest = plan.order_slot is not None

        def pick(a, b):
            # Latest: the greatest version, ties to the later row; else the first row.
            if latest:
                return a if (a[3], a[1]) >= (b[3], b[1]) else b
            return a if a[1] <= b[1] else b

        winners = ok.map(lambda r: (r[2], r)).reduceByKey(pick).values()
    else:
        winners = ok
    winners = winners.persist(StorageLevel.MEMORY_AND_DISK)
    per_partition = winners.map(lambda r: (r[4], r[5])).countByValue()
    rows_written = sum(per_partition.values())
    counts = {
        "rows_read": rows_read,
        "rows_written": rows_written,
        "rows_duplicate": rows_read - rows_quarantined - rows_written,
        "rows_quarantined": rows_quarantined,
    }

    # 2. Files, then the quarantine object.
    files = _write_files(spark, lake, plan, keys, winners, per_partition, source_bytes, rows_read)
    quarantine_key = _write_quarantine(lake, keys, records, rows_quarantined)
    records.unpersist()
    winners.unpersist()

    # 3. Files of the previous manifest that this run did not write.
    stale = _delete_stale(lake, keys, files)

    # 4. Partitions.
    partitions = sorted({(f["year"], f["month"]) for f in files})
    if catalog is not None:
        catalog.add_partitions(lake, plan, partitions)

    # 5. The manifest, last.
    body = rows.manifest_json(
        table.name, source_key, source_etag, source_bytes, plan.manifest_columns(), files, counts,
        quarantine_key,
    )
    lake.put(keys.manifest_key, body)
    return Outcome(counts, files, partitions, quarantine_key, stale)


def _write_files(spark, lake, plan, keys, winners, per_partition, source_bytes, rows_read) -> list:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not per_partition:
        return []
    outs = plan.outs
    fields = [
        T.StructField("_sluice_row", T.LongType(), False),
        T.StructField("year", T.StringType(), False),
        T.StructField("month", T.StringType(), False),
    ] + [T.StructField(f"_c{i}", spark_type(o.ty), True) for i, o in enumerate(outs)]
    df = spark.createDataFrame(winners.map(lambda r: [r[1], r[4], r[5]] + r[6]), T.StructType(fields))
    cols = []
    for i, o in enumerate(outs):
        c = F.col(f"_c{i}")
        if o.ty.kind == "timestamp":
            c = F.expr(f"timestamp_micros(_c{i})")
        elif o.ty.kind == "date":
            c = F.expr(f"date_from_unix_date(CAST(_c{i} AS INT))")
        cols.append(c.alias(o.name))
    # One task per (year, month), rows in source order: one file per partition, and files
    # roll at about the target size (rows estimated from the source's bytes per row, as Parquet
    # with ZSTD is several times smaller than its text).
    bytes_per_row = max(1, source_bytes // max(1, rows_read))
    max_rows = max(1000, plan.table.output.target_file_size_bytes * 4 // bytes_per_row)
    ordered = (
        df.repartition(max(1, len(per_partition)), "year", "month")
        .sortWithinPartitions("year", "month", "_sluice_row")
        .select("year", "month", *cols)
    )
    scratch = _scratch_uri(lake, keys)
    (
        ordered.write.mode("overwrite")
        .partitionBy("year", "month")
        .option("compression", "zstd")
        .option("parquet.compression.codec.zstd.level", str(plan.table.output.zstd_level))
        .option("maxRecordsPerFile", str(max_rows))
        .parquet(scratch)
    )
    files = []
    for (year, month), n in sorted(per_partition.items()):
        parts = _list_parquet(spark, f"{scratch}/year={year}/month={month}")
        remaining = n
        for part, uri in enumerate(parts):
            key = keys.curated_key(year, month, part)
            size, etag = lake.move_in(uri, key)
            rows_in = min(max_rows, remaining)
            remaining -= rows_in
            files.append({"key": key, "year": year, "month": month, "rows": rows_in, "bytes": size, "etag": etag})
        if remaining:
            raise RuntimeError(f"partition {year}/{month}: {remaining} rows not accounted for by its files")
    _remove_scratch(spark, scratch)
    return files


def _scratch_uri(lake, keys) -> str:
    if isinstance(lake, LocalLake):
        return "file://" + tempfile.mkdtemp(prefix="sluice-glue-")
    base = os.environ.get("SLUICE_GLUE_TEMP") or lake.spark_uri("state/glue/")
    return f"{base.rstrip('/')}/{keys.table}/{keys.hash}/{int(time.time() * 1000)}"


def _list_parquet(spark, dir_uri: str) -> list:
    """The Parquet files Spark wrote in one partition directory, in name order (one task wrote
    them all, `…c000`, `…c001`, … as they rolled)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(dir_uri)
    fs = path.getFileSystem(conf)
    if not fs.exists(path):
        return []
    names = [
        s.getPath().toString()
        for s in fs.listStatus(path)
        if s.getPath().getName().endswith(".parquet") and not s.getPath().getName().startswith(".")
    ]
    return sorted(names)


def _remove_scratch(spark, uri: str) -> None:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)


def _write_quarantine(lake, keys, records, n: int) -> Optional[str]:
    if n == 0:
        lake.delete(keys.quarantine_key)
        return None
    q = records.filter(lambda r: r[0] == "q").map(lambda r: (r[1], r[2])).sortByKey()
    _put_lines(lake, keys.quarantine_key, (line for _, line in q.toLocalIterator()))
    return keys.quarantine_key


def _put_lines(lake, key: str, lines) -> None:
    """Writes text lines as the object `key` through a file on the driver's local disk: the
    quarantine of a huge, dirty object may be far larger than the driver's memory (and than one
    PutObject's 5 GB), so it is spooled to disk one partition at a time (`toLocalIterator`) and
    uploaded from there."""
    fd, path = tempfile.mkstemp(prefix="sluice-quarantine-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as f:
            for line in lines:
                f.write(line.encode("utf-8"))
        lake.put_file(key, path)
    finally:
        if os.path.exists(path):
            os.remove(path)


def _delete_stale(lake, keys, files) -> int:
    body = lake.get_bytes(keys.manifest_key)
    if body is None:
        return 0
    try:
        prev = json.loads(body)
        if prev.get("version") not in (1, 2):
            raise ValueError("unknown version")
        prev_keys = [f["key"] for f in prev["files"]]
    except (ValueError, KeyError, TypeError) as e:
        log.warning("previous manifest %s unreadable (%s); stale files (if any) not cleaned", keys.manifest_key, e)
        return 0
    now = {f["key"] for f in files}
    stale = [k for k in prev_keys if k not in now]
    for k in stale:
        lake.delete(k)
    return len(stale)


# --------------------------------------------------------------------------------------------
# The Glue Data Catalog (shared/src/catalog/aws.rs)
# --------------------------------------------------------------------------------------------

INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PROJECTION_KEYS = (
    "projection.enabled", "projection.year.type", "projection.year.range", "projection.month.type",
    "projection.month.range", "projection.month.digits", "storage.location.template",
    "projection.year.digits",
)


class IncompatibleSchema(Exception):
    pass


class GlueCatalog:
    def __init__(self, glue):
        self.glue = glue

    def _sd(self, plan, location: str) -> dict:
        return {
            "Columns": [{"Name": o.name, "Type": o.ty.glue_type()} for o in plan.outs],
            "Location": location,
            "InputFormat": INPUT_FORMAT,
            "OutputFormat": OUTPUT_FORMAT,
            "SerdeInfo": {"SerializationLibrary": SERDE},
        }

    def _params(self, params: dict, plan, location: str) -> dict:
        params = dict(params)
        params["classification"] = "parquet"
        params["parquet.compression"] = "ZSTD"
        for k in PROJECTION_KEYS:
            params.pop(k, None)
        proj = plan.table.projection_years
        if proj:
            loc = location if location.endswith("/") else location + "/"
            params.update({
                "projection.enabled": "true",
                "projection.year.type": "integer",
                "projection.year.range": f"{proj[0]},{proj[1]}",
                "projection.month.type": "integer",
                "projection.month.range": "1,12",
                "projection.month.digits": "2",
                "storage.location.template": loc + "year=${year}/month=${month}/",
            })
        return params

    def ensure_table(self, lake, plan, keys, source_key) -> None:
        t = plan.table
        db, name = t.catalog_database, t.catalog_table
        location = lake.url(rows.curated_prefix(t.name))
        for _ in range(2):
            try:
                table = self.glue.get_table(DatabaseName=db, Name=name)["Table"]
            except self.glue.exceptions.EntityNotFoundException:
                table = None
            if table is not None:
                return self._evolve(lake, plan, keys, source_key, table)
            try:
                self.glue.create_database(DatabaseInput={"Name": db})
            except self.glue.exceptions.AlreadyExistsException:
                pass
            try:
                self.glue.create_table(
                    DatabaseName=db,
                    TableInput={
                        "Name": name,
                        "TableType": "EXTERNAL_TABLE",
                        "Parameters": self._params({}, plan, location),
                        "StorageDescriptor": self._sd(plan, location),
                        "PartitionKeys": [{"Name": k, "Type": "string"} for k in rows.PARTITION_KEYS],
                    },
                )
                return None
            except self.glue.exceptions.AlreadyExistsException:
                continue
        raise RuntimeError(f"table {db}.{name} was updated concurrently; retry")

    def _evolve(self, lake, plan, keys, source_key, table) -> None:
        t = plan.table
        db, name = t.catalog_database, t.catalog_table
        norm = lambda s: "".join(s.split()).lower()  # noqa: E731
        existing = table.get("StorageDescriptor", {}).get("Columns", [])
        pkeys = [c["Name"] for c in table.get("PartitionKeys", [])]
        if [k.lower() for k in pkeys] != list(rows.PARTITION_KEYS):
            self._refuse(lake, keys, source_key, db, name, "(partition keys)", ",".join(pkeys), "year,month")
        added = []
        for o in plan.outs:
            old = next((c for c in existing if c["Name"].lower() == o.name.lower()), None)
            if old is None:
                if all(a["Name"].lower() != o.name.lower() for a in added):
                    added.append({"Name": o.name, "Type": o.ty.glue_type()})
            elif norm(old.get("Type", "")) != norm(o.ty.glue_type()):
                self._refuse(lake, keys, source_key, db, name, o.name, old.get("Type", ""), o.ty.glue_type())
        params = table.get("Parameters", {})
        proj = None
        if params.get("projection.enabled", "").strip().lower() == "true" and "," in params.get("projection.year.range", ""):
            a, b = params["projection.year.range"].split(",", 1)
            proj = (int(a), int(b))
        projection_changed = proj != (tuple(t.projection_years) if t.projection_years else None)
        if not added and not projection_changed:
            return
        sd = dict(table.get("StorageDescriptor", {}))
        sd["Columns"] = existing + added
        new_params = self._params(params, plan, sd.get("Location") or lake.url(rows.curated_prefix(t.name))) if projection_changed else params
        table_input = {
            "Name": table["Name"],
            "TableType": table.get("TableType") or "EXTERNAL_TABLE",
            "Parameters": new_params,
            "PartitionKeys": table.get("PartitionKeys", []),
            "StorageDescriptor": sd,
        }
        for k in ("Description", "Owner", "Retention", "TargetTable"):
            if k in table:
                table_input[k] = table[k]
        kwargs = {"DatabaseName": db, "TableInput": table_input}
        if table.get("VersionId"):
            kwargs["VersionId"] = table["VersionId"]
        self.glue.update_table(**kwargs)

    def _refuse(self, lake, keys, source_key, db, name, column, existing, requested):
        reason = (
            f"table {db}.{name}: column {column} is {existing} in the catalog but {requested} in the "
            "pipeline file; a type change is not additive: create a new column or a new table"
        )
        lake.put(keys.quarantine_key, rows.object_quarantine_line(source_key, column, reason).encode())
        raise IncompatibleSchema(f"object {source_key} not written: {reason}")

    def add_partitions(self, lake, plan, partitions) -> None:
        t = plan.table
        if t.projection_years or not partitions:
            return
        for i in range(0, len(partitions), 100):
            chunk = partitions[i : i + 100]
            out = self.glue.batch_create_partition(
                DatabaseName=t.catalog_database,
                TableName=t.catalog_table,
                PartitionInputList=[
                    {"Values": [y, m], "StorageDescriptor": self._sd(plan, lake.url(rows.partition_prefix(t.name, y, m)))}
                    for y, m in chunk
                ],
            )
            failed = [
                e for e in out.get("Errors", [])
                if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"
            ]
            if failed:
                raise RuntimeError(f"Glue BatchCreatePartition: {len(failed)} of {len(chunk)} partitions were not created: {failed[:5]}")


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _parse_args(argv):
    p = argparse.ArgumentParser(description="Sluice transform of one source object, on Spark.")
    p.add_argument("--local", action="store_true", help="local lake directory, no catalog (tests)")
    p.add_argument("--pipeline", help="pipeline TOML: a path, or s3://bucket/key in Glue mode")
    p.add_argument("--lake", help="local mode: the lake directory")
    p.add_argument("--source-key", dest="source_key_local", help="local mode: the raw object's key")
    p.add_argument("--hash-key-file", help="the HMAC key file, instead of the pipeline's [hash_key]")
    p.add_argument("--cases", help="local batch mode: a directory of golden cases (tests/golden), all "
                   "run in one Spark session (one JVM start instead of one per case)")
    p.add_argument("--out", help="with --cases: where each case's lake goes, <out>/<case>/")
    p.add_argument("--source_bucket", help="Glue mode: the lake bucket")
    p.add_argument("--source_key", help="Glue mode: the raw object's key")
    p.add_argument("--table", help="Glue mode: the table (checked against the key's table)")
    args, _unknown = p.parse_known_args(argv)  # Glue adds its own (--JOB_ID, --TempDir, …)
    return args


def _read_pipeline_text(uri: str, s3=None) -> tuple[str, Optional[str]]:
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8"), None
    with open(uri, encoding="utf-8") as f:
        return f.read(), os.path.dirname(os.path.abspath(uri))


def _hash_key(pipeline: rows.Pipeline, override: Optional[str], base_dir: Optional[str], secrets=None) -> Optional[bytes]:
    """secrets/mod.rs `load_hash_key`: the override file, then the pipeline's file, then its
    secret (SecretString as UTF-8, or SecretBinary)."""
    if override:
        return rows.read_key_file(override)
    if pipeline.hash_key_file and base_dir is not None:
        f = pipeline.hash_key_file
        return rows.read_key_file(f if os.path.isabs(f) else os.path.join(base_dir, f))
    if pipeline.hash_key_secret:
        if secrets is None:
            import boto3

            secrets = boto3.client("secretsmanager")
        out = secrets.get_secret_value(SecretId=pipeline.hash_key_secret)
        key = out["SecretString"].encode("utf-8") if "SecretString" in out else out["SecretBinary"]
        if len(key) < 16:
            raise rows.ConfigError(f"the hash key is {len(key)} bytes; at least 16 are required")
        return key
    return None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    if args.cases:
        return run_cases(args.cases, args.out)
    if not args.pipeline:
        raise SystemExit("--pipeline is required")
    if args.local:
        if not (args.lake and args.source_key_local):
            raise SystemExit("--local needs --lake and --source-key")
        text, base_dir = _read_pipeline_text(args.pipeline)
        pipeline = rows.parse_pipeline(text)
        hash_key = _hash_key(pipeline, args.hash_key_file, base_dir)
        lake_root = args.lake
        lake = LocalLake(lake_root)
        spark = spark_session(local=True)
        try:
            out = transform(spark, lake, lambda: LocalLake(lake_root), pipeline, args.source_key_local, hash_key)
        finally:
            spark.stop()
        source_key = args.source_key_local
    else:
        import boto3

        if not (args.source_bucket and args.source_key):
            raise SystemExit("Glue mode needs --source_bucket and --source_key")
        s3 = boto3.client("s3")
        text, _ = _read_pipeline_text(args.pipeline, s3)
        pipeline = rows.parse_pipeline(text)
        pipeline.refuse_cdc(args.source_key, args.table)
        owner = pipeline.table_for_key(args.source_key)
        if args.table and owner is not None and owner.name != args.table:
            raise rows.ConfigError(f"{args.source_key} belongs to table {owner.name}, not {args.table}")
        hash_key = _hash_key(pipeline, args.hash_key_file, None)
        bucket = args.source_bucket
        lake = S3Lake(bucket, s3)
        spark = spark_session(local=False)
        out = transform(
            spark, lake, lambda: S3Lake(bucket, __import__("boto3").client("s3")), pipeline,
            args.source_key, hash_key, catalog=GlueCatalog(boto3.client("glue")),
        )
        source_key = args.source_key
    log.info(
        "transformed %s",
        json.dumps({
            "key": source_key, **out.counts, "files": len(out.files), "partitions": len(out.partitions),
            "stale_files_deleted": out.stale_deleted, "duration_ms": int((time.time() - started) * 1000),
        }),
    )
    return 0


def run_cases(cases_dir: str, out_dir: Optional[str]) -> int:
    """Every golden case under `cases_dir` (a folder with case.toml), each into a fresh lake
    `<out_dir>/<case>/`, as tests/golden/README.md describes one run, in one Spark session. A
    case that fails leaves its error in `<out_dir>/<case>/error.txt`; the exit status is 1 when
    any failed."""
    if not out_dir:
        raise SystemExit("--cases needs --out")
    cases = sorted(
        d for d in os.listdir(cases_dir) if os.path.isfile(os.path.join(cases_dir, d, "case.toml"))
    )
    only = os.environ.get("SLUICE_GOLDEN_CASE")
    if only:
        cases = [c for c in cases if c == only]
    spark = spark_session(local=True)
    failed = 0
    try:
        for case in cases:
            src = os.path.join(cases_dir, case)
            lake_root = os.path.join(out_dir, case)
            shutil.rmtree(lake_root, ignore_errors=True)
            os.makedirs(lake_root)
            try:
                with open(os.path.join(src, "case.toml"), "rb") as f:
                    source_key = rows.tomllib.load(f)["source_key"]
                inputs = [n for n in os.listdir(src) if n.startswith("input.")]
                if len(inputs) != 1:
                    raise rows.ConfigError(f"case {case}: expected one input.* file, found {inputs}")
                lake = LocalLake(lake_root)
                os.makedirs(os.path.dirname(lake.path(source_key)), exist_ok=True)
                shutil.copyfile(os.path.join(src, inputs[0]), lake.path(source_key))
                pipeline_path = os.path.join(src, "pipeline.toml")
                text, base_dir = _read_pipeline_text(pipeline_path)
                pipeline = rows.parse_pipeline(text)
                key_file = os.path.join(src, "hash.key")
                hash_key = _hash_key(pipeline, key_file if os.path.exists(key_file) else None, base_dir)
                out = transform(spark, lake, lambda root=lake_root: LocalLake(root), pipeline, source_key, hash_key)
                log.info("case %s: %s", case, json.dumps(out.counts))
            except Exception as e:  # one case's failure is reported, the others still run
                failed += 1
                log.error("case %s failed: %s", case, e)
                with open(os.path.join(lake_root, "error.txt"), "w", encoding="utf-8") as f:
                    f.write(f"{type(e).__name__}: {e}\n")
    finally:
        spark.stop()
    log.info("%d cases, %d failed", len(cases), failed)
    return 1 if failed else 0


def glue_main() -> int:
    """The Glue job's entry: `awsglue` (on Glue only, not on PyPI) resolves the job arguments;
    the transform itself is `main`."""
    try:
        from awsglue.utils import getResolvedOptions  # type: ignore
    except ImportError:
        return main()
    names = ["source_bucket", "source_key", "table", "pipeline"]
    opts = getResolvedOptions(sys.argv, names + (["TempDir"] if "--TempDir" in sys.argv else []))
    if opts.get("TempDir"):
        os.environ.setdefault("SLUICE_GLUE_TEMP", opts["TempDir"])
    return main([
        "--source_bucket", opts["source_bucket"], "--source_key", opts["source_key"],
        "--table", opts["table"], "--pipeline", opts["pipeline"],
    ])


if __name__ == "__main__":
    try:
        sys.exit(glue_main())
    except (rows.ConfigError, rows.HeaderError, IncompatibleSchema) as e:
        log.error("%s", e)
        sys.exit(2)
