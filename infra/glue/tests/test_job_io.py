"""The job's lake I/O that needs no Spark: the quarantine object goes through a local file."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import transform_job as job  # noqa: E402


class _FakeS3:
    def __init__(self):
        self.uploads = {}

    def upload_file(self, path, bucket, key):
        # boto3's managed transfer reads the file itself (multipart past its threshold).
        with open(path, "rb") as f:
            self.uploads[(bucket, key)] = f.read()

    def put_object(self, **kw):  # pragma: no cover - must not be called
        raise AssertionError("put_object: the quarantine must not be sent as one in-memory body")

    def head_object(self, Bucket, Key):
        return {"ETag": '"abc"', "ContentLength": len(self.uploads[(Bucket, Key)])}


def test_quarantine_lines_are_spooled_to_a_file_and_uploaded(tmp_path, monkeypatch):
    monkeypatch.setattr(job.tempfile, "tempdir", str(tmp_path))
    s3 = _FakeS3()
    lake = job.S3Lake("lake", s3)
    lines = ('{"line":%d}\n' % i for i in range(1000))
    job._put_lines(lake, "quarantine/t/h.jsonl", lines)
    body = s3.uploads[("lake", "quarantine/t/h.jsonl")]
    assert body.count(b"\n") == 1000 and body.startswith(b'{"line":0}\n')
    assert os.listdir(tmp_path) == []  # the spool file is gone


def test_local_lake_moves_the_spooled_file_in(tmp_path):
    lake = job.LocalLake(str(tmp_path / "lake"))
    job._put_lines(lake, "quarantine/t/h.jsonl", iter(["a\n", "b\n"]))
    with open(lake.path("quarantine/t/h.jsonl"), "rb") as f:
        assert f.read() == b"a\nb\n"


def test_a_failed_upload_leaves_no_spool_file(tmp_path, monkeypatch):
    monkeypatch.setattr(job.tempfile, "tempdir", str(tmp_path))

    class Broken(_FakeS3):
        def upload_file(self, path, bucket, key):
            raise OSError("network")

    try:
        job._put_lines(job.S3Lake("lake", Broken()), "quarantine/t/h.jsonl", iter(["x\n"]))
    except OSError:
        pass
    else:
        raise AssertionError("the upload error must propagate")
    assert os.listdir(tmp_path) == []


def test_the_job_refuses_an_object_of_a_cdc_table_before_reading_it():
    from sluice_rows import ConfigError, parse_pipeline
    from test_rows import CDC_PIPELINE

    pipeline = parse_pipeline(CDC_PIPELINE)
    # No Spark, lake or catalog is touched: the refusal comes first.
    try:
        job.transform(None, None, None, pipeline, "raw/cdc/orders/s/1-2.jsonl", None)
    except ConfigError as e:
        assert 'has format = "cdc"' in str(e)
    else:
        raise AssertionError("a cdc object was accepted")


def test_a_run_for_a_cdc_table_is_refused_by_its_table_argument(monkeypatch):
    from sluice_rows import ConfigError
    from test_rows import CDC_PIPELINE

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(job, "_read_pipeline_text", lambda uri, s3=None: (CDC_PIPELINE, None))
    monkeypatch.setattr(job, "spark_session", lambda local: (_ for _ in ()).throw(AssertionError("no Spark")))
    argv = ["--source_bucket", "lake", "--source_key", "raw/cdc/dumps/a.jsonl", "--table", "orders",
            "--pipeline", "s3://conf/pipeline.toml"]
    try:
        job.main(argv)
    except ConfigError as e:
        assert str(e).startswith('table orders has format = "cdc"'), e
    else:
        raise AssertionError("a run for a cdc table was accepted")
