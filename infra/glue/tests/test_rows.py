"""The Glue job's row semantics against values pinned from the Rust transform (its unit tests,
serde_json 1.0.154, zmij, base64 0.22 and csv-core, run once to get the expected text)."""

import gzip
import hashlib
import hmac
import io
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import sluice_rows as r  # noqa: E402

PIPELINE = """
[hash_key]
file = "k"

[[tables]]
name = "people"
raw_prefix = "raw/people/"
format = "jsonl"
partition_by = "seen_at"
catalog = { database = "db" }

[[tables.columns]]
name = "PersonID"
type = "int"
required = true

[[tables.columns]]
name = "email"
type = "string"
pii = { action = "hash" }

[[tables.columns]]
name = "born"
type = "date"
required = true
pii = { action = "age_band", as_of = "seen_at", band_years = 5 }

[[tables.columns]]
name = "seen_at"
type = "timestamp"
required = true

[[tables.columns]]
name = "address"
type = "json"
fields = [
  { path = "geo.lat", type = "float" },
  { path = "street", type = "string", pii = { action = "drop" } },
]
"""


def table():
    return r.parse_pipeline(PIPELINE).tables[0]


def test_layout_keys_follow_the_stem_and_hash_rule():
    k = r.ObjectKeys.new("funnel", "raw/funnel/2019-Oct sample+1.csv.gz")
    assert k.stem == "2019-oct_sample_1"
    assert len(k.hash) == 16
    assert k.manifest_key == f"manifests/funnel/{k.hash}.json"
    assert k.quarantine_key == f"quarantine/funnel/{k.hash}.jsonl"
    assert k.curated_key("2019", "10", 3) == (
        f"curated/funnel/year=2019/month=10/2019-oct_sample_1-{k.hash}-00003.parquet"
    )
    assert r.source_stem("raw/t/.hidden") == "object"
    assert r.source_stem("raw/t/日本.csv") == "__"
    assert len(r.source_stem("raw/t/" + "A" * 80 + ".csv")) == 40


def test_xxh3_matches_the_reference_vector():
    # XXH3_64bits("") from the xxHash reference implementation.
    assert r.source_hash("") == "2d06800538d394c2"


def test_snake_case_as_the_pipeline_folds_names():
    for name, want in [("UserID", "user_id"), ("event-time", "event_time"), ("geo.lat", "geo_lat"),
                       ("PersonID", "person_id"), ("HTTPServer", "http_server"), ("1st", "c_1st"), ("", "c_")]:
        assert r.snake_case(name) == want, name


def test_output_columns_in_file_order_with_types_and_nullability():
    plan = r.compile_plan(table())
    got = [(c["name"], c["glue_type"], c["nullable"]) for c in plan.manifest_columns()]
    assert got == [
        ("person_id", "bigint", False),
        ("email_hash", "string", True),
        ("born_age_band", "string", True),
        ("seen_at", "timestamp", False),
        ("address_geo_lat", "double", True),
    ]


def ts(s):
    return r.parse_timestamp(s.encode(), ["%d/%m/%Y %H:%M"], "auto")


def test_timestamps_in_common_shapes():
    base = 1_569_888_000_000_000
    assert ts("2019-10-01 00:00:00 UTC") == base
    assert ts("2019-10-01T02:00:00+02:00") == base
    assert ts("2019-09-30T19:00:00-0500") == base
    assert ts("2019-10-01T00:00:00.123456789Z") == base + 123_456
    assert ts("2019-10-01") == base
    assert ts("1569888000") == base
    assert ts("1569888000000") == base
    assert ts("01/10/2019 00:00") == base
    assert ts("1969-12-31T23:59:59Z") == -1_000_000
    for bad in ["2019-13-01 00:00:00", "2019-02-30", "2019-10-01 24:00:00", "yesterday", "", "-",
                "2019-10-01T00:00:00+25:00"]:
        with pytest.raises(r.ValueError_):
            ts(bad)
    with pytest.raises(r.ValueError_, match="^`yesterday` is not a timestamp$"):
        ts("yesterday")


def test_decimals_ints_bools_dates():
    assert r.parse_decimal(b"123.45", 12, 2) == 12_345
    assert r.parse_decimal(b"-0.5", 12, 2) == -50
    assert r.parse_decimal(b"1.230", 12, 2) == 123
    with pytest.raises(r.ValueError_, match="has more than 2 decimal places"):
        r.parse_decimal(b"1.234", 12, 2)
    with pytest.raises(r.ValueError_, match="does not fit decimal"):
        r.parse_decimal(b"12345678901.00", 12, 2)
    with pytest.raises(r.ValueError_, match="cannot be stored in a decimal column"):
        r.parse_decimal(b"NaN", 12, 2)
    assert r.parse_i64(b"9223372036854775807") == 2**63 - 1
    with pytest.raises(r.ValueError_, match="out of the 64-bit integer range"):
        r.parse_i64(b"9223372036854775808")
    with pytest.raises(r.ValueError_, match=r"^`4.2` is not an integer$"):
        r.parse_i64(b"4.2")
    assert r.parse_bool(b"YES") is True
    assert r.parse_date(b"1970-01-02") == 1
    assert r.parse_date(b"2024-01-31T23:30:00-05:00") == r.parse_date(b"2024-02-01")
    with pytest.raises(r.ValueError_, match=r"is not a date \(YYYY-MM-DD\)"):
        r.parse_date(b"1970-1-2")


def test_civil_round_trip():
    for d in [-719_162, -1, 0, 1, 18_000, 2_932_896]:
        assert r.days_from_civil(*r.civil_from_days(d)) == d


# serde_json 1.0.154's own messages for these inputs.
@pytest.mark.parametrize("text,want", [
    (b'{"a":1', "EOF while parsing an object at line 1 column 6"),
    (b"{a:1}", "key must be a string at line 1 column 2"),
    (b'{"a":1,}', "trailing comma at line 1 column 8"),
    (b"[1 2]", "expected `,` or `]` at line 1 column 4"),
    (b"not json", "expected ident at line 1 column 2"),
    (b"01", "invalid number at line 1 column 2"),
    (b'{"a":"\\ud800"}', "unexpected end of hex escape at line 1 column 13"),
    (b'{"a":"\xff"}', "invalid unicode code point at line 1 column 7"),
    (b"{\n\"a\":\n}", "expected value at line 3 column 1"),
])
def test_json_errors_are_serde_json_s(text, want):
    with pytest.raises(r.JsonError) as e:
        r.json_parse(text)
    assert str(e.value) == want


def test_json_values_print_as_serde_json():
    v = r.json_parse(b'{"b":[1,{"z":1,"a":2.50}],"a":"x\\n\\u00e9","c":1e20,"d":-0,"e":18446744073709551616}')
    assert r.json_text(v) == '{"a":"x\\né","b":[1,{"a":2.5,"z":1}],"c":1e+20,"d":-0.0,"e":1.8446744073709552e+19}'


@pytest.mark.parametrize("x,zmij,display", [
    (1.0, "1.0", "1"), (1e16, "1e+16", "10000000000000000"), (1e-5, "0.00001", "0.00001"),
    (1.5e-7, "1.5e-7", "0.00000015"), (-0.0, "-0.0", "-0"), (123456.789, "123456.789", "123456.789"),
])
def test_float_text(x, zmij, display):
    assert r.zmij_format(x) == zmij
    assert r.rust_f64_display(x) == display


def test_base64_errors_in_the_crate_s_words():
    assert r.parse_base64(b"aGVsbG8=") == b"hello"
    for text, want in [(b"abc", "Invalid padding"), (b"a", "Invalid input length: 1"),
                       (b"aGVsbG9=", "Invalid last symbol 57, offset 6."), (b"ab!=", "Invalid symbol 33, offset 2.")]:
        with pytest.raises(r.ValueError_) as e:
            r.parse_base64(text)
        assert str(e.value) == "not base64: " + want


def csv(data: bytes, max_record=1 << 20):
    return list(r.csv_records(io.BytesIO(data), ord(","), ord('"'), max_record))


def test_csv_records_as_csv_core_reads_them():
    recs = csv(b'\xef\xbb\xbfa,b\r\n1,"multi\r\nline, x"\r\n\r\n2,"say ""hi"""x\n3,\n4')
    assert [x.fields for x in recs] == [
        [b"a", b"b"], [b"1", b"multi\r\nline, x"], [b"2", b'say "hi"x'], [b"3", b""], [b"4"]
    ]
    assert [x.start_line("csv") for x in recs] == [1, 2, 5, 6, 7]
    big = csv(b"h\n" + b"x" * 50 + b"\n", max_record=20)
    assert big[1].oversize and big[1].total_bytes == 51 and big[1].data == b"x" * 20


def test_csv_records_across_read_chunks(monkeypatch):
    monkeypatch.setattr(r, "READ_BYTES", 3)
    data = b'a,b\n1,"x\ny"\n2,z'
    assert [x.fields for x in csv(data)] == [[b"a", b"b"], [b"1", b"x\ny"], [b"2", b"z"]]


def test_jsonl_records_skip_blank_lines_and_keep_line_numbers():
    data = b'\xef\xbb\xbf{"a":1}\r\n \n{"a":2}\n{"a":3}'
    recs = list(r.jsonl_records(io.BytesIO(data), 1 << 20))
    assert [(x.end_line, x.data) for x in recs] == [(1, b'{"a":1}'), (3, b'{"a":2}'), (4, b'{"a":3}')]


def test_gzip_by_magic_bytes():
    gz = gzip.compress(b"x\n")
    assert r.open_source(io.BytesIO(gz), "raw/t/a.csv").read() == b"x\n"


KEY = b"0123456789abcdef0123456789abcdef"


def test_a_row_through_the_pii_rules_and_its_quarantine_record():
    t = table()
    plan = r.compile_plan(t)
    header = r.fields_without_header(plan)
    line = (b'{"PersonID": 1, "email": "a@b.c", "born": "1990-05-01", "seen_at": "2024-03-01T12:00:00Z",'
            b' "address": {"geo": {"lat": 52.5}, "street": "x"}}')
    got = r.process_record(plan, header, "raw/people/a.jsonl", 0, r.Record(1, None, line, False, len(line)), KEY)
    want_hash = hmac.new(KEY, b"a@b.c", hashlib.sha256).hexdigest()
    assert got[0] == "ok" and (got[4], got[5]) == ("2024", "03")
    assert got[6] == [1, want_hash, "30-34", 1_709_294_400_000_000, 52.5]
    bad = b'{"PersonID": "x", "born": "1990-05-01", "seen_at": "2024-03-01"}'
    q = r.process_record(plan, header, "raw/people/a.jsonl", 1, r.Record(2, None, bad, False, len(bad)), KEY)
    assert q[0] == "q"
    assert q[2] == ('{"object":"raw/people/a.jsonl","line":2,"column":"person_id",'
                    '"reason":"`x` is not an integer","raw":"{\\"PersonID\\": \\"x\\", \\"born\\": '
                    '\\"1990-05-01\\", \\"seen_at\\": \\"2024-03-01\\"}"}\n')


def test_manifest_is_serde_json_pretty_with_counts_at_top_level():
    body = r.manifest_json("t", "raw/t/a.csv", None, 10, [{"name": "id", "glue_type": "bigint", "nullable": False}],
                           [], {"rows_read": 1, "rows_written": 0, "rows_duplicate": 0, "rows_quarantined": 1},
                           "quarantine/t/x.jsonl")
    assert body.decode() == (
        '{\n  "version": 2,\n  "table": "t",\n  "source_key": "raw/t/a.csv",\n  "source_etag": null,\n'
        '  "source_bytes": 10,\n  "columns": [\n    {\n      "name": "id",\n      "glue_type": "bigint",\n'
        '      "nullable": false\n    }\n  ],\n  "files": [],\n  "rows_read": 1,\n  "rows_written": 0,\n'
        '  "rows_duplicate": 0,\n  "rows_quarantined": 1,\n  "quarantine_key": "quarantine/t/x.jsonl"\n}'
    )


# --- max_record_bytes: a record is never held whole past the limit (decode/csv.rs, jsonl.rs) ---


class _Endless(io.RawIOBase):
    """`head`, then `filler` repeated up to `size` bytes, produced as read (never all in memory)."""

    def __init__(self, head: bytes, filler: bytes, size: int):
        self.head, self.filler, self.left = head, filler, size

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        if n <= 0:
            return 0
        src = (self.head + self.filler * (n // len(self.filler) + 1))[:n]
        self.head = b""
        b[:n] = src
        self.left -= n
        return n


def _peak_while(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_csv_unterminated_quote_is_one_oversize_record_read_in_bounded_memory():
    size = 32 << 20
    stream = io.BufferedReader(_Endless(b'id,note\n1,"open\n', b"more text, no quote\n", size))
    recs, peak = _peak_while(lambda: list(r.csv_records(stream, ord(","), ord('"'), 1000)))
    assert len(recs) == 2
    big = recs[1]
    assert big.oversize and big.fields is None and len(big.data) == 1000
    assert big.data.startswith(b"1open\nmore text")
    # Every byte after the header is field text but the delimiter and the opening quote.
    assert big.total_bytes == size - len(b"id,note\n") - len(b',"') + 2  # two field ends
    assert peak < 8 << 20, peak


def test_csv_long_line_without_newline_is_skipped_to_the_record_end():
    line = b"9," + b"y" * 5000
    data = b"a,b\n" + line + b"\n" + b'7,"q\nx"\n' + line + b"\r\n8,z"
    for chunk in (1, 3, 64, 1 << 20):
        r.READ_BYTES, old = chunk, r.READ_BYTES
        try:
            recs = csv(data, max_record=100)
        finally:
            r.READ_BYTES = old
        assert [x.oversize for x in recs] == [False, True, False, True, False], chunk
        assert [x.start_line("csv") for x in recs] == [1, 2, 3, 5, 6]
        assert recs[1].total_bytes == 5003 and recs[1].data == (b"9" + b"y" * 5000)[:100]
        assert recs[2].fields == [b"7", b"q\nx"]
        assert recs[4].fields == [b"8", b"z"]


def test_csv_record_limit_counts_one_byte_per_field():
    # decode/csv.rs: field bytes + field count > max_record_bytes → oversize.
    ok = csv(b"ab,cd\n", max_record=6)[0]
    over = csv(b"ab,cde\n", max_record=6)[0]
    assert not ok.oversize and ok.fields == [b"ab", b"cd"]
    assert over.oversize and over.total_bytes == 7 and over.data == b"abcde"
    quoted = csv(b'"a""b",c\n', max_record=5)[0]  # a"b (3) + c (1) + 2 fields = 6
    assert quoted.oversize and quoted.total_bytes == 6 and quoted.data == b'a"bc'


def test_csv_reader_state_survives_any_chunking(monkeypatch):
    data = b'\xef\xbb\xbfh1,h2\r\n"a,""b""\r\nc",d\n\n\r\n"x"y,"",\r"open'
    want = [(x.fields, x.end_line, x.oversize) for x in csv(data)]
    assert want[1][0] == [b'a,"b"\r\nc', b"d"]
    assert want[2][0] == [b"xy", b"", b""]
    assert want[3] == ([b"open"], 6, False)  # csv-core counts only \n
    for n in range(1, 12):
        monkeypatch.setattr(r, "READ_BYTES", n)
        assert [(x.fields, x.end_line, x.oversize) for x in csv(data)] == want, n


def test_jsonl_line_without_end_is_kept_to_the_limit_in_bounded_memory():
    size = 32 << 20
    stream = io.BufferedReader(_Endless(b'{"a":1}\n{"b":"', b"x" * 100, size))
    recs, peak = _peak_while(lambda: list(r.jsonl_records(stream, 1000)))
    assert [x.oversize for x in recs] == [False, True]
    assert recs[1].total_bytes == size - 8 and recs[1].data == (b'{"b":"' + b"x" * 1000)[:1000]
    assert recs[1].end_line == 2
    assert peak < 8 << 20, peak


def test_jsonl_oversize_line_between_lines(monkeypatch):
    monkeypatch.setattr(r, "READ_BYTES", 5)
    data = b'{"a":1}\r\n' + b"z" * 30 + b"\r\n\n{}"
    recs = list(r.jsonl_records(io.BytesIO(data), 10))
    assert [(x.end_line, x.oversize, x.total_bytes, x.data) for x in recs] == [
        (1, False, 8, b'{"a":1}'), (2, True, 31, b"z" * 10), (4, False, 2, b"{}")
    ]


# --- timestamp_formats: chrono's specifiers, or a loud refusal ---


def _ts(value: str, fmt: str) -> int:
    return r.parse_timestamp(value.encode(), [fmt], "auto")


def test_fractional_seconds_as_chrono_parses_them():
    # Values in a shape of their own: the built-in shapes would take the ISO ones first.
    base = _ts("01/03/2024 10:00:05", "%d/%m/%Y %H:%M:%S")
    assert base == _ts("2024-03-01T10:00:05Z", "%F")
    # %.f: dot optional, 1..9 digits, more skipped; nanoseconds truncated to microseconds.
    assert _ts("01/03/2024 10:00:05", "%d/%m/%Y %H:%M:%S%.f") == base
    assert _ts("01/03/2024 10:00:05.5", "%d/%m/%Y %H:%M:%S%.f") == base + 500_000
    assert _ts("01/03/2024 10:00:05.123456789", "%d/%m/%Y %H:%M:%S%.f") == base + 123_456
    assert _ts("01/03/2024 10:00:05.1234567891234", "%d/%m/%Y %H:%M:%S%.f") == base + 123_456
    # %.3f / %3f: exactly three digits.
    assert _ts("01/03/2024 10:00:05.120", "%d/%m/%Y %H:%M:%S%.3f") == base + 120_000
    assert _ts("05/120 01/03/2024 10:00", "%S/%3f %d/%m/%Y %H:%M") == base + 120_000
    with pytest.raises(r.ValueError_):
        _ts("01/03/2024 10:00:05.12", "%d/%m/%Y %H:%M:%S%.3f")
    # %f: a whole number of nanoseconds (chrono's Numeric(Nanosecond)), not a fraction.
    assert _ts("01/03/2024 10:00:05.123", "%d/%m/%Y %H:%M:%S.%f") == base
    assert _ts("01/03/2024 10:00:05.123456789", "%d/%m/%Y %H:%M:%S.%f") == base + 123_456
    # With an offset after the fraction.
    assert _ts("01/03/2024 11:00:05.25+01:00", "%d/%m/%Y %H:%M:%S%.f%:z") == base + 250_000


def test_padding_modifiers_and_shorthands():
    assert _ts("1/3/2024 10:00", "%-d/%-m/%Y %H:%M") == _ts("2024-03-01 10:00:00", "%F %T")


@pytest.mark.parametrize("fmt,spec", [("%Y %Q", "%Q"), ("%s", "%s"), ("%d %k", "%k"), ("%c", "%c"), ("%Y%", "%")])
def test_untranslatable_specifier_fails_the_plan(fmt, spec):
    with pytest.raises(r.ConfigError) as e:
        r.compile_timestamp_format(fmt)
    assert f"`{spec}`" in str(e.value)
    t = table()
    t.timestamp_formats = [fmt]
    with pytest.raises(r.ConfigError):
        r.compile_plan(t)


CDC_PIPELINE = """
[cdc]
source_url_env = "SLUICE_CDC_SOURCE_URL"
slot = "s"
publication = "p"
stream = "changes"

[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "cdc"
cdc = { schema = "public", table = "orders" }
dedup = { key = ["id"] }
catalog = { database = "db" }
columns = [{ name = "id", type = "int" }]

[[tables]]
name = "cdc_dumps"
raw_prefix = "raw/cdc/"
format = "jsonl"
partition_by = "t"
catalog = { database = "db" }
columns = [{ name = "t", type = "timestamp" }]
"""


def test_cdc_tables_are_left_out_and_refused():
    # The cdc table has no partition_by (it defaults to _commit_ts on the Rust side): parsing
    # must not need it, since the job never reads change events.
    p = r.parse_pipeline(CDC_PIPELINE)
    assert [t.name for t in p.tables] == ["cdc_dumps"]
    assert p.cdc_tables == {"orders": "raw/cdc/orders/"}
    with pytest.raises(r.ConfigError, match='table orders has format = "cdc": the Glue job does not read change events'):
        p.refuse_cdc("raw/cdc/dumps/a.jsonl", "orders")
    with pytest.raises(r.ConfigError, match="raw/cdc/orders/s/1-2.jsonl belongs to table orders"):
        p.refuse_cdc("raw/cdc/orders/s/1-2.jsonl")
    # The shorter prefix of a jsonl table does not own the cdc table's keys; its own keys pass.
    p.refuse_cdc("raw/cdc/dumps/a.jsonl", "cdc_dumps")
    assert p.table_for_key("raw/cdc/dumps/a.jsonl").name == "cdc_dumps"


def test_a_pipeline_of_cdc_tables_only_parses_and_an_empty_one_does_not():
    only_cdc = CDC_PIPELINE.split("[[tables]]\nname = \"cdc_dumps\"")[0]
    p = r.parse_pipeline(only_cdc)
    assert p.tables == [] and list(p.cdc_tables) == ["orders"]
    with pytest.raises(r.ConfigError, match="at least one table"):
        r.parse_pipeline("[hash_key]\nfile = \"k\"\n")
