"""The Rust transform's row semantics, in plain Python: the pipeline file, record splitting
(CSV as csv-core reads it, JSON lines), typing, cleaning, null tokens, JSON flattening, PII
rules and the quarantine and manifest JSON. No Spark here: `transform_job.py` runs these
functions on Spark executors, and the tests call them directly.

The reference is the Rust code under `shared/src/` (transform/, config/, schema.rs,
lake/layout.rs, lake/quarantine.rs, lake/manifest.rs); each function names the one it
mirrors. Quarantine reasons are the Rust text, word for word: the golden cases compare them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import gzip
import hashlib
import hmac
import io
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

try:  # tomllib is in Python 3.11+; Glue 4.0 runs 3.10, where `tomli` is the same parser.
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore

import xxhash

# --------------------------------------------------------------------------------------------
# Lake layout (shared/src/lake/layout.rs)
# --------------------------------------------------------------------------------------------

CURATED = "curated/"
MANIFESTS = "manifests/"
QUARANTINE = "quarantine/"
STEM_MAX_CHARS = 40
MANIFEST_VERSION = 2


def source_hash(source_key: str) -> str:
    """xxh3-64 of the whole source key, 16 lower-case hex digits."""
    return "%016x" % xxhash.xxh3_64_intdigest(source_key.encode("utf-8"))


def source_stem(source_key: str) -> str:
    """The file name up to its first `.`, lower-cased, other than [a-z0-9_-] as `_`, at most
    40 characters; `object` when empty."""
    name = source_key.rsplit("/", 1)[-1]
    base = name.split(".", 1)[0]
    out = []
    for c in base:
        if (c.isascii() and c.isalnum()) or c in "-_":
            out.append(c.lower())
        else:
            out.append("_")
        if len(out) == STEM_MAX_CHARS:
            break
    return "".join(out) or "object"


def partition_prefix(table: str, year: str, month: str) -> str:
    return f"{CURATED}{table}/year={year}/month={month}/"


def curated_prefix(table: str) -> str:
    return f"{CURATED}{table}/"


@dataclass(frozen=True)
class ObjectKeys:
    table: str
    stem: str
    hash: str
    manifest_key: str
    quarantine_key: str

    @staticmethod
    def new(table: str, source_key: str) -> "ObjectKeys":
        h = source_hash(source_key)
        return ObjectKeys(
            table=table,
            stem=source_stem(source_key),
            hash=h,
            manifest_key=f"{MANIFESTS}{table}/{h}.json",
            quarantine_key=f"{QUARANTINE}{table}/{h}.jsonl",
        )

    def curated_key(self, year: str, month: str, part: int) -> str:
        return f"{partition_prefix(self.table, year, month)}{self.stem}-{self.hash}-{part:05d}.parquet"


# --------------------------------------------------------------------------------------------
# Pipeline file (shared/src/config/)
# --------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The pipeline file cannot be used."""


BUILTIN_COLUMNS = {
    "_op": "string",
    "_lsn": "int",
    "_commit_ts": "timestamp",
    "_shard": "string",
    "_unchanged": "string",
}


@dataclass(frozen=True)
class ColType:
    kind: str  # int float decimal bool string binary date timestamp json
    precision: int = 0
    scale: int = 0

    @staticmethod
    def parse(s: str) -> "ColType":
        t = s.strip().lower()
        simple = {
            "int": "int", "bigint": "int", "integer": "int", "float": "float", "double": "float",
            "bool": "bool", "boolean": "bool", "string": "string", "binary": "binary",
            "date": "date", "timestamp": "timestamp", "json": "json",
        }
        if t in simple:
            return ColType(simple[t])
        m = re.fullmatch(r"decimal\((.*),(.*)\)", t)
        if not m:
            raise ConfigError(f"unknown type `{s}`")
        try:
            p, sc = int(m.group(1).strip()), int(m.group(2).strip())
        except ValueError as e:
            raise ConfigError(f"`{s}`: bad precision or scale") from e
        if not (1 <= p <= 38) or sc < 0 or sc > p:
            raise ConfigError(f"`{s}`: precision must be 1..=38 and 0 <= scale <= precision")
        return ColType("decimal", p, sc)

    def glue_type(self) -> str:
        return {
            "int": "bigint", "float": "double", "bool": "boolean", "string": "string",
            "json": "string", "binary": "binary", "date": "date", "timestamp": "timestamp",
        }.get(self.kind) or f"decimal({self.precision},{self.scale})"

    def __str__(self) -> str:  # the Rust Display, used in reasons
        if self.kind == "decimal":
            return f"decimal({self.precision},{self.scale})"
        return self.kind


def snake_case(name: str) -> str:
    """config/names.rs `snake_case`."""
    out: list[str] = []
    chars = list(name)

    def ends_us() -> bool:
        return bool(out) and out[-1] == "_"

    for i, c in enumerate(chars):
        if c.isascii() and c.isalnum():
            if c.isupper():
                prev = chars[i - 1] if i > 0 else None
                nxt = chars[i + 1] if i + 1 < len(chars) else None
                boundary = False
                if prev is not None and prev.isascii() and (prev.islower() or prev.isdigit()):
                    boundary = True
                elif prev is not None and prev.isascii() and prev.isupper():
                    boundary = nxt is not None and nxt.isascii() and nxt.islower()
                if boundary and not ends_us() and out:
                    out.append("_")
                out.append(c.lower())
            else:
                out.append(c)
        elif out and not ends_us():
            out.append("_")
    s = "".join(out).rstrip("_")
    if not s or s[0].isdigit():
        s = "c_" + s
    return s


@dataclass
class PiiRule:
    action: str  # drop hash year age_band
    as_of: Optional[str] = None
    band_years: Optional[int] = None


@dataclass
class JsonField:
    path: str
    ty: ColType
    required: bool = False
    pii: Optional[PiiRule] = None


@dataclass
class Column:
    name: str
    ty: ColType
    required: bool = False
    rename: Optional[str] = None
    null_tokens: Optional[list[str]] = None
    fields: list[JsonField] = field(default_factory=list)
    pii: Optional[PiiRule] = None

    def output_name(self) -> str:
        if self.name in BUILTIN_COLUMNS:
            return self.name
        return self.rename if self.rename is not None else snake_case(self.name)


@dataclass
class Output:
    target_file_size_bytes: int = 128 * 1024 * 1024
    row_group_bytes: int = 8 * 1024 * 1024
    buffer_budget_bytes: int = 12 * 1024 * 1024
    batch_rows: int = 8192
    max_open_partitions: int = 16
    zstd_level: int = 1
    max_field_bytes: int = 1024 * 1024
    max_record_bytes: int = 16 * 1024 * 1024


@dataclass
class Table:
    name: str
    raw_prefix: str
    format: str
    columns: list[Column]
    partition_by: str
    catalog_database: str
    catalog_table: str
    projection_years: Optional[tuple[int, int]] = None
    delimiter: int = ord(",")
    quote: int = ord('"')
    header: bool = True
    null_tokens: list[str] = field(default_factory=lambda: [""])
    trim: bool = True
    timestamp_formats: list[str] = field(default_factory=list)
    epoch_unit: str = "auto"
    dedup_key: list[str] = field(default_factory=list)
    dedup_order_by: Optional[str] = None
    has_dedup: bool = False
    output: Output = field(default_factory=Output)
    has_warehouse: bool = False


# Change tables (docs/CDC.md): the job does not read change events (`InputFormat::glue_supported`
# is false for them), and the transform Lambda never routes their objects here.
CDC_FORMAT = "cdc"


@dataclass
class Pipeline:
    tables: list[Table]
    hash_key_secret: Optional[str] = None
    hash_key_file: Optional[str] = None  # as written in the file (relative to it)
    # The format = "cdc" tables, name -> raw_prefix: left out of `tables`, known only to refuse them.
    cdc_tables: dict[str, str] = field(default_factory=dict)

    def table_for_key(self, key: str) -> Optional[Table]:
        best = None
        for t in self.tables:
            if key.startswith(t.raw_prefix) and (best is None or len(t.raw_prefix) > len(best.raw_prefix)):
                best = t
        return best

    def refuse_cdc(self, key: str, table: Optional[str] = None) -> None:
        """Raises ConfigError when `table` (the run's --table) is a cdc table, or when a cdc
        table owns `key` (its prefix is the longest match, as `table_for_key` resolves)."""
        why = "the Glue job does not read change events; the transform Lambda transforms a cdc table's objects whatever their size"
        if table is not None and table in self.cdc_tables:
            raise ConfigError(f'table {table} has format = "{CDC_FORMAT}": {why}')
        owner = self.table_for_key(key)
        longest = len(owner.raw_prefix) if owner else -1
        for name, prefix in self.cdc_tables.items():
            if key.startswith(prefix) and len(prefix) > longest:
                raise ConfigError(f'{key} belongs to table {name}, which has format = "{CDC_FORMAT}": {why}')

    def table(self, name: str) -> Optional[Table]:
        return next((t for t in self.tables if t.name == name), None)


def _pii(d: Optional[dict]) -> Optional[PiiRule]:
    if d is None:
        return None
    return PiiRule(d["action"], d.get("as_of"), d.get("band_years"))


def _one_char(v: Any, what: str) -> int:
    if not isinstance(v, str) or len(v) != 1 or not v.isascii():
        raise ConfigError(f"{what} must be one ASCII character")
    return ord(v)


def parse_pipeline(text: str) -> Pipeline:
    """The pipeline TOML, as `config::Pipeline` reads it. The Rust side validates the file in
    full (every function and `sluice` refuse a bad one); here only what this job relies on."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"pipeline file: {e}") from e
    hk = doc.get("hash_key") or {}
    tables = []
    cdc_tables = {}
    for t in doc.get("tables", []):
        if t.get("format") == CDC_FORMAT:
            # Not read here; such a table may lack what this job needs (partition_by defaults).
            cdc_tables[t["name"]] = t["raw_prefix"]
            continue
        csv = t.get("csv", {})
        out = Output(**{k: v for k, v in t.get("output", {}).items()})
        cols = []
        for c in t["columns"]:
            cols.append(
                Column(
                    name=c["name"],
                    ty=ColType.parse(c["type"]),
                    required=bool(c.get("required", False)),
                    rename=c.get("rename"),
                    null_tokens=c.get("null_tokens"),
                    fields=[
                        JsonField(f["path"], ColType.parse(f["type"]), bool(f.get("required", False)), _pii(f.get("pii")))
                        for f in c.get("fields", [])
                    ],
                    pii=_pii(c.get("pii")),
                )
            )
        cat = t["catalog"]
        dedup = t.get("dedup")
        proj = cat.get("partition_projection_years")
        tables.append(
            Table(
                name=t["name"],
                raw_prefix=t["raw_prefix"],
                format=t["format"],
                columns=cols,
                partition_by=t["partition_by"],
                catalog_database=cat["database"],
                catalog_table=cat.get("table") or t["name"],
                projection_years=tuple(proj) if proj else None,
                delimiter=_one_char(csv.get("delimiter", ","), "csv.delimiter"),
                quote=_one_char(csv.get("quote", '"'), "csv.quote"),
                header=bool(csv.get("header", True)),
                null_tokens=list(t.get("null_tokens", [""])),
                trim=bool(t.get("trim", True)),
                timestamp_formats=list(t.get("timestamp_formats", [])),
                epoch_unit=t.get("epoch_unit", "auto"),
                dedup_key=list(dedup["key"]) if dedup else [],
                dedup_order_by=dedup.get("order_by") if dedup else None,
                has_dedup=dedup is not None,
                output=out,
                has_warehouse=t.get("warehouse") is not None,
            )
        )
    if not tables and not cdc_tables:
        raise ConfigError("pipeline file: at least one table is required")
    return Pipeline(
        tables=tables, hash_key_secret=hk.get("secret"), hash_key_file=hk.get("file"), cdc_tables=cdc_tables
    )


def read_key_file(path: str) -> bytes:
    """secrets/mod.rs `HashKey::from_file`: the whole file, one trailing newline dropped."""
    with open(path, "rb") as f:
        b = f.read()
    if b.endswith(b"\n"):
        b = b[:-1]
    if len(b) < 16:
        raise ConfigError(f"the hash key is {len(b)} bytes; at least 16 are required")
    return b


# --------------------------------------------------------------------------------------------
# Output schema and plan (shared/src/schema.rs, transform/plan.rs)
# --------------------------------------------------------------------------------------------

DEFAULT_BAND_YEARS = 10
PARTITION_KEYS = ("year", "month")


@dataclass(frozen=True)
class Slot:
    input: int
    json_path: tuple[str, ...]
    ty: ColType
    required: bool
    name: str


@dataclass(frozen=True)
class Input:
    name: str
    is_json: bool
    json_index: int
    null_tokens: tuple[bytes, ...]
    trim: bool


@dataclass(frozen=True)
class Out:
    name: str
    slot: int
    kind: str  # plain hash year age_band
    ty: ColType  # the output's type
    nullable: bool
    as_of_slot: int = -1
    band_years: int = DEFAULT_BAND_YEARS


@dataclass
class Plan:
    table: Table
    inputs: list[Input]
    slots: list[Slot]
    outs: list[Out]
    key_slots: list[int]
    order_slot: Optional[int]
    partition_slot: int
    sized_outs: list[int]

    def manifest_columns(self) -> list[dict]:
        return [{"name": o.name, "glue_type": o.ty.glue_type(), "nullable": o.nullable} for o in self.outs]

    def needs_hash_key(self) -> bool:
        return any(o.kind == "hash" for o in self.outs)


def json_field_name(base: str, path: str) -> str:
    return f"{base}_{snake_case(path)}"


def compile_plan(t: Table) -> Plan:
    for f in t.timestamp_formats:
        # Fails the job, naming the specifier, before any row is read (see `_CHRONO_TO_PY`).
        _ts_format(f)
    inputs: list[Input] = []
    slots: list[Slot] = []
    pii_of_slot: list[Optional[PiiRule]] = []
    table_tokens = tuple(s.encode() for s in t.null_tokens)
    json_count = 0
    for c in t.columns:
        idx = len(inputs)
        is_json = c.ty.kind == "json"
        inputs.append(
            Input(
                name=c.name,
                is_json=is_json,
                json_index=json_count,
                null_tokens=tuple(s.encode() for s in c.null_tokens) if c.null_tokens is not None else table_tokens,
                trim=t.trim,
            )
        )
        if is_json:
            json_count += 1
        base = c.output_name()
        if is_json:
            for f in c.fields:
                slots.append(Slot(idx, tuple(f.path.split(".")), f.ty, f.required, json_field_name(base, f.path)))
                pii_of_slot.append(f.pii)
        else:
            slots.append(Slot(idx, (), c.ty, c.required, base))
            pii_of_slot.append(c.pii)

    def slot_of_input(name: str) -> int:
        for i, inp in enumerate(inputs):
            if inp.name == name:
                for s, sl in enumerate(slots):
                    if sl.input == i and not sl.json_path:
                        return s
                raise ConfigError(f"`{name}` is a json column")
        raise ConfigError(f"no column `{name}`")

    outs: list[Out] = []
    for s, (sl, rule) in enumerate(zip(slots, pii_of_slot)):
        if rule is None:
            outs.append(Out(sl.name, s, "plain", sl.ty, not sl.required))
        elif rule.action == "drop":
            continue
        elif rule.action == "hash":
            outs.append(Out(f"{sl.name}_hash", s, "hash", ColType("string"), not sl.required))
        elif rule.action == "year":
            outs.append(Out(f"{sl.name}_year", s, "year", ColType("int"), not sl.required))
        elif rule.action == "age_band":
            if rule.as_of is None:
                raise ConfigError(f"`{sl.name}`: age_band needs as_of")
            outs.append(
                Out(
                    f"{sl.name}_age_band", s, "age_band", ColType("string"), True,
                    as_of_slot=slot_of_input(rule.as_of),
                    band_years=rule.band_years if rule.band_years is not None else DEFAULT_BAND_YEARS,
                )
            )
        else:
            raise ConfigError(f"unknown pii action `{rule.action}`")
    seen = set()
    for o in outs:
        if o.name in seen:
            raise ConfigError(f"two output columns are both named `{o.name}` (use `rename`)")
        if o.name in PARTITION_KEYS:
            raise ConfigError(f"output column `{o.name}` clashes with a partition key (use `rename`)")
        seen.add(o.name)
    sized = (
        [i for i, o in enumerate(outs) if o.kind == "plain" and o.ty.kind in ("string", "json", "binary")]
        if t.has_warehouse
        else []
    )
    return Plan(
        table=t,
        inputs=inputs,
        slots=slots,
        outs=outs,
        key_slots=[slot_of_input(k) for k in t.dedup_key],
        order_slot=slot_of_input(t.dedup_order_by) if t.dedup_order_by else None,
        partition_slot=slot_of_input(t.partition_by),
        sized_outs=sized,
    )


# --------------------------------------------------------------------------------------------
# Records (transform/decode/)
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One record of the source. CSV: `fields` (unescaped); JSONL: `data` is the line.
    An oversize record keeps only `data`, its first `max_record_bytes` bytes."""

    end_line: int
    fields: Optional[list[bytes]]
    data: bytes
    oversize: bool
    total_bytes: int

    def start_line(self, fmt: str) -> int:
        if fmt == "jsonl":
            return self.end_line
        inside = (b"".join(self.fields) if self.fields is not None else self.data).count(b"\n")
        return max(self.end_line - inside, 0)


READ_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


def open_source(raw: io.RawIOBase | io.BufferedIOBase, key: str) -> io.BufferedIOBase:
    """transform/engine/input.rs: gzip by extension or magic bytes (several members read)."""
    br = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type]
    head = br.peek(2)[:2]
    if key.endswith(".gz") or head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=br, mode="rb")  # type: ignore[return-value]
    return br


def csv_records(stream, delimiter: int, quote: int, max_record_bytes: int) -> Iterator[Record]:
    """Records as csv-core reads them (decode/csv.rs): CR, LF or CRLF end a record, blank lines
    are skipped, a quote opens a quoted field only at its start, `""` inside is a quote, bytes
    after a closing quote join the field. A UTF-8 BOM at the start is dropped.

    The input is read chunk by chunk and the parser's state carries across chunks, so a record
    never has to be whole in memory: once it is over `max_record_bytes` (its bytes plus one per
    field, as decode/csv.rs counts) only its first `max_record_bytes` bytes are kept and the rest
    is counted and dropped up to the record's end, as csv-core streams it through a scratch
    buffer. An unterminated quote thus costs at most `max_record_bytes` of memory."""
    head = b""
    while len(head) < 3:
        got = stream.read(3 - len(head))
        if not got:
            break
        head += got
    rd = _CsvReader(delimiter, quote, max_record_bytes)
    chunk = head[3:] if head == _BOM else head
    while True:
        if chunk:
            yield from rd.feed(chunk)
        chunk = stream.read(READ_BYTES)
        if not chunk:
            break
    yield from rd.finish()


# The reader's states: between records (terminators are skipped), at a field's start, in an
# unquoted field, in a quoted field, just after a quote inside a quoted field.
_S_REC, _S_START, _S_IN, _S_QUOTED, _S_QUOTE = range(5)


class _CsvReader:
    """csv-core's state machine, resumable at any byte (see `csv_records`)."""

    def __init__(self, delimiter: int, quote: int, max_record_bytes: int):
        self.delim = delimiter
        self.quote = quote
        self.q = bytes([quote])
        self.d = bytes([delimiter])
        self.max = max_record_bytes
        self.term_re = re.compile(rb"[\r\n]")
        self.field_re = re.compile(b"[" + re.escape(self.d) + rb"\r\n]")
        self.state = _S_REC
        self.nl = 0  # '\n' bytes consumed: csv-core's line counter, minus one
        self.last: Optional[int] = None  # the last byte consumed
        self._reset()

    def _reset(self) -> None:
        self.fields: list[bytes] = []
        self.cur = bytearray()
        self.out = 0  # the record's field bytes, kept or not
        self.nfields = 0  # its field ends, kept or not
        self.oversize = False
        self.data = b""

    def _append(self, piece: bytes) -> None:
        self.out += len(piece)
        if self.oversize:
            return
        self.cur += piece
        self._check()

    def _check(self) -> None:
        # decode/csv.rs: field bytes plus the field ends so far, over the limit → oversize; the
        # first `max_record_bytes` bytes stay, the rest is dropped as it comes.
        if self.out + len(self.fields) > self.max:
            self.oversize = True
            self.data = (b"".join(self.fields) + bytes(self.cur))[: self.max]
            self.fields = []
            self.cur = bytearray()

    def _end_field(self) -> None:
        self.nfields += 1
        if self.oversize:
            return
        self.fields.append(bytes(self.cur))
        self.cur = bytearray()
        self._check()

    def _end_record(self) -> Record:
        # decode/csv.rs `finish_record`: csv-core's line() is 1 + '\n' read; the record's own
        # '\n' counts only when it ended on one.
        end_line = self.nl + (0 if self.last == 10 else 1)
        # decode/csv.rs counts a record as its field bytes plus one per field end.
        total = self.out + self.nfields
        if self.oversize:
            rec = Record(end_line, None, self.data, True, total)
        else:
            rec = Record(end_line, self.fields, b"", False, total)
        self._reset()
        self.state = _S_REC
        return rec

    def feed(self, buf: bytes) -> Iterator[Record]:
        i = 0
        n = len(buf)
        delim, quote = self.delim, self.quote
        while i < n:
            st = self.state
            if st == _S_REC:
                while i < n and buf[i] in (10, 13):
                    self.nl += buf[i] == 10
                    i += 1
                if i == n:
                    break
                # The common case: the whole line is in this chunk and holds no quote.
                m = self.term_re.search(buf, i)
                if m is not None and buf.find(self.q, i, m.start()) < 0:
                    e = m.start()
                    fields = buf[i:e].split(self.d)
                    # Field bytes plus one per field end: the line's bytes and its terminator.
                    total = e - i + 1
                    self.nl += buf[e] == 10
                    self.last = buf[e]
                    i = e + 1
                    if total > self.max:
                        yield Record(self.nl + (0 if self.last == 10 else 1), None, b"".join(fields)[: self.max], True, total)
                    else:
                        yield Record(self.nl + (0 if self.last == 10 else 1), fields, b"", False, total)
                    continue
                self.state = _S_START
            elif st == _S_START:
                c = buf[i]
                if c == quote:
                    self.state = _S_QUOTED
                    i += 1
                else:
                    self.state = _S_IN
            elif st == _S_IN:
                m = self.field_re.search(buf, i)
                if m is None:
                    self._append(buf[i:])
                    i = n
                    break
                e = m.start()
                if e > i:
                    self._append(buf[i:e])
                c = buf[e]
                i = e + 1
                if c == delim:
                    self._end_field()
                    self.state = _S_START
                else:
                    self.nl += c == 10
                    self.last = c
                    self._end_field()
                    yield self._end_record()
            elif st == _S_QUOTED:
                e = buf.find(self.q, i)
                end = n if e < 0 else e
                self.nl += buf.count(b"\n", i, end)
                if end > i:
                    self._append(buf[i:end])
                if e < 0:
                    i = n
                    break
                self.state = _S_QUOTE
                i = e + 1
            else:  # _S_QUOTE
                c = buf[i]
                i += 1
                if c == quote:
                    self._append(self.q)
                    self.state = _S_QUOTED
                elif c == delim:
                    self._end_field()
                    self.state = _S_START
                elif c in (10, 13):
                    self.nl += c == 10
                    self.last = c
                    self._end_field()
                    yield self._end_record()
                else:
                    self._append(bytes([c]))
                    self.state = _S_IN
        if n:
            self.last = buf[n - 1]

    def finish(self) -> Iterator[Record]:
        """The end of the input ends a record in progress (an open quote included)."""
        if self.state != _S_REC:
            self._end_field()
            yield self._end_record()


def _is_ascii_ws(b: bytes) -> bool:
    # Rust's u8::is_ascii_whitespace: space, \t, \n, \x0c, \r (not \x0b).
    return all(c in (32, 9, 10, 12, 13) for c in b)


def jsonl_records(stream, max_record_bytes: int) -> Iterator[Record]:
    """decode/jsonl.rs: one record per non-blank line; CRLF and a BOM tolerated. A line over
    `max_record_bytes` keeps only its first `max_record_bytes` bytes; the rest is counted and
    dropped as it is read, so a line without end costs no more memory than that."""
    line = 0
    cur = bytearray()
    total = 0
    oversize = False

    def push(b: bytes) -> None:
        nonlocal cur, total, oversize
        total += len(b)
        room = max(max_record_bytes - len(cur), 0)
        if len(b) > room:
            oversize = True
            b = b[:room]
        cur += b

    def end() -> Iterator[Record]:
        nonlocal line, cur, total, oversize
        line += 1
        kept = bytes(cur)
        if line == 1 and kept.startswith(_BOM):
            kept = kept[3:]
        if not oversize and kept.endswith(b"\r"):
            kept = kept[:-1]
        rec = None
        if oversize or not _is_ascii_ws(kept):
            rec = Record(line, None, kept, oversize, total)
        cur = bytearray()
        total = 0
        oversize = False
        if rec is not None:
            yield rec

    while True:
        chunk = stream.read(READ_BYTES)
        if not chunk:
            break
        i = 0
        while True:
            j = chunk.find(b"\n", i)
            if j < 0:
                push(chunk[i:])
                break
            push(chunk[i:j])
            yield from end()
            i = j + 1
    if cur or oversize:
        yield from end()


def records(stream, t: Table) -> Iterator[Record]:
    if t.format == "csv":
        return csv_records(stream, t.delimiter, t.quote, t.output.max_record_bytes)
    return jsonl_records(stream, t.output.max_record_bytes)


# --------------------------------------------------------------------------------------------
# serde_json, as the Rust transform parses and prints JSON
# --------------------------------------------------------------------------------------------


class JNum:
    """serde_json's Number: a u64, an i64 (negative) or an f64."""

    __slots__ = ("kind", "v")

    def __init__(self, kind: str, v):
        self.kind = kind  # pos neg float
        self.v = v

    def as_i64(self) -> Optional[int]:
        if self.kind == "neg":
            return self.v
        if self.kind == "pos" and self.v <= 2**63 - 1:
            return self.v
        return None

    def as_f64(self) -> float:
        return float(self.v)

    def __str__(self) -> str:
        return str(self.v) if self.kind != "float" else zmij_format(self.v)

    def __eq__(self, other):
        return isinstance(other, JNum) and self.kind == other.kind and self.v == other.v

    def __hash__(self):
        return hash((self.kind, self.v))

    def __repr__(self):
        return f"JNum({self.kind},{self.v!r})"


def _digits_exp(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of |x| and the decimal exponent of the first digit."""
    d = decimal.Decimal(repr(abs(x)))
    sign, digits, exp = d.normalize().as_tuple()
    ds = "".join(map(str, digits)) or "0"
    return ds, exp + len(ds) - 1  # type: ignore[operator]


def zmij_format(x: float) -> str:
    """zmij's `format_finite` (serde_json's float text): fixed for 1e-5 <= |x| < 1e16 with
    `.0` on whole numbers, else `d.ddde+N` / `d.ddde-N`."""
    if x == 0:
        return "-0.0" if str(x).startswith("-") else "0.0"
    sign = "-" if x < 0 else ""
    ds, e = _digits_exp(x)
    if -5 <= e < 16:
        if e >= 0:
            ip = ds[: e + 1].ljust(e + 1, "0")
            fp = ds[e + 1 :] or "0"
        else:
            ip = "0"
            fp = "0" * (-e - 1) + ds
        return f"{sign}{ip}.{fp}"
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{sign}{mant}e{'+' if e >= 0 else '-'}{abs(e)}"


def rust_f64_display(x: float) -> str:
    """Rust's `{}` of an f64: shortest round-trip digits, never an exponent."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    sign = "-" if str(x).startswith("-") else ""
    if x == 0:
        return sign + "0"
    d = decimal.Decimal(repr(abs(x))).normalize()
    return sign + format(d, "f")


class JsonError(Exception):
    pass


_JSON_MSGS = {
    "eof_value": "EOF while parsing a value",
    "eof_list": "EOF while parsing a list",
    "eof_object": "EOF while parsing an object",
    "eof_string": "EOF while parsing a string",
    "colon": "expected `:`",
    "list_comma": "expected `,` or `]`",
    "object_comma": "expected `,` or `}`",
    "ident": "expected ident",
    "value": "expected value",
    "escape": "invalid escape",
    "number": "invalid number",
    "range": "number out of range",
    "unicode": "invalid unicode code point",
    "control": "control character (\\u0000-\\u001F) found while parsing a string",
    "key_string": "key must be a string",
    "lone_leading": "lone leading surrogate in hex escape",
    "trailing_comma": "trailing comma",
    "trailing": "trailing characters",
    "hex_end": "unexpected end of hex escape",
    "recursion": "recursion limit exceeded",
}


class _JsonParser:
    """A port of serde_json's `from_slice::<Value>` (de.rs, read.rs SliceRead): the same
    values (u64/i64/f64 numbers, last duplicate key wins) and the same error text and
    positions, which quarantine reasons carry."""

    def __init__(self, b: bytes):
        self.b = b
        self.i = 0
        self.depth = 128

    def _pos(self, idx: int) -> tuple[int, int]:
        start = self.b.rfind(b"\n", 0, idx) + 1
        line = self.b.count(b"\n", 0, idx) + 1
        return line, idx - start

    def error(self, code: str) -> JsonError:
        line, col = self._pos(self.i)
        return JsonError(f"{_JSON_MSGS[code]} at line {line} column {col}")

    def peek_error(self, code: str) -> JsonError:
        line, col = self._pos(min(self.i + 1, len(self.b)))
        return JsonError(f"{_JSON_MSGS[code]} at line {line} column {col}")

    def peek(self) -> Optional[int]:
        return self.b[self.i] if self.i < len(self.b) else None

    def next(self) -> Optional[int]:
        if self.i < len(self.b):
            c = self.b[self.i]
            self.i += 1
            return c
        return None

    def ws(self) -> Optional[int]:
        while self.i < len(self.b) and self.b[self.i] in (32, 10, 9, 13):
            self.i += 1
        return self.peek()

    def parse(self):
        v = self.value()
        if self.ws() is not None:
            raise self.peek_error("trailing")
        return v

    def ident(self, rest: bytes):
        for e in rest:
            c = self.next()
            if c is None:
                raise self.error("eof_value")
            if c != e:
                raise self.error("ident")

    def value(self):
        p = self.ws()
        if p is None:
            raise self.peek_error("eof_value")
        if p == ord("n"):
            self.i += 1
            self.ident(b"ull")
            return None
        if p == ord("t"):
            self.i += 1
            self.ident(b"rue")
            return True
        if p == ord("f"):
            self.i += 1
            self.ident(b"alse")
            return False
        if p == ord("-"):
            self.i += 1
            return self.number(False)
        if 48 <= p <= 57:
            return self.number(True)
        if p == ord('"'):
            self.i += 1
            return self.string()
        if p == ord("["):
            self.depth -= 1
            if self.depth == 0:
                raise self.error("recursion")
            self.i += 1
            out = []
            first = True
            while True:
                c = self.ws()
                if c == ord("]"):
                    break
                if c == ord(",") and not first:
                    self.i += 1
                    c = self.ws()
                elif c is None:
                    raise self.peek_error("eof_list")
                elif not first:
                    raise self.peek_error("list_comma")
                first = False
                if c == ord("]"):
                    raise self.peek_error("trailing_comma")
                if c is None:
                    raise self.peek_error("eof_value")
                out.append(self.value())
            self.depth += 1
            self.i += 1
            return out
        if p == ord("{"):
            self.depth -= 1
            if self.depth == 0:
                raise self.error("recursion")
            self.i += 1
            obj: dict = {}
            first = True
            while True:
                c = self.ws()
                if c == ord("}"):
                    break
                if c == ord(",") and not first:
                    self.i += 1
                    c = self.ws()
                elif c is None:
                    raise self.peek_error("eof_object")
                elif not first:
                    raise self.peek_error("object_comma")
                first = False
                if c == ord('"'):
                    self.i += 1
                    k = self.string()
                    c = self.ws()
                    if c == ord(":"):
                        self.i += 1
                    elif c is None:
                        raise self.peek_error("eof_object")
                    else:
                        raise self.peek_error("colon")
                    obj[k] = self.value()
                elif c == ord("}"):
                    raise self.peek_error("trailing_comma")
                elif c is None:
                    raise self.peek_error("eof_value")
                else:
                    raise self.peek_error("key_string")
            self.depth += 1
            self.i += 1
            return obj
        raise self.peek_error("value")

    def number(self, positive: bool):
        start = self.i
        c = self.next()
        if c is None:
            raise self.error("eof_value")
        if c == 48:
            p = self.peek()
            if p is not None and 48 <= p <= 57:
                raise self.peek_error("number")
        elif not (49 <= c <= 57):
            raise self.error("number")
        while (p := self.peek()) is not None and 48 <= p <= 57:
            self.i += 1
        is_float = False
        if self.peek() == ord("."):
            is_float = True
            self.i += 1
            n = 0
            while (p := self.peek()) is not None and 48 <= p <= 57:
                self.i += 1
                n += 1
            if n == 0:
                if self.peek() is not None:
                    raise self.peek_error("number")
                raise self.peek_error("eof_value")
        if self.peek() in (ord("e"), ord("E")):
            is_float = True
            self.i += 1
            if self.peek() in (ord("+"), ord("-")):
                self.i += 1
            c = self.next()
            if c is None:
                raise self.error("eof_value")
            if not (48 <= c <= 57):
                raise self.error("number")
            while (p := self.peek()) is not None and 48 <= p <= 57:
                self.i += 1
        text = self.b[start : self.i].decode()
        if not is_float:
            v = int(text)
            if positive and v <= 2**64 - 1:
                return JNum("pos", v)
            if not positive and 0 < v <= 2**63:
                return JNum("neg", -v)
            # serde_json: `-0` and integers past the 64-bit range are floats.
            f = float(text)
            return JNum("float", f if positive else -f)
        f = float(text)
        if f in (float("inf"), float("-inf")):
            raise self.error("range")
        return JNum("float", f if positive else -f)

    def string(self) -> str:
        out = bytearray()
        while True:
            j = self.i
            n = len(self.b)
            while j < n and self.b[j] not in (34, 92) and self.b[j] >= 0x20:
                j += 1
            if j == n:
                self.i = n
                raise self.error("eof_string")
            out += self.b[self.i : j]
            c = self.b[j]
            self.i = j + 1
            if c == 34:
                try:
                    return out.decode("utf-8")
                except UnicodeDecodeError as e:
                    # read.rs `as_str`: the column backs up to the first invalid byte.
                    line, col = self._pos(self.i)
                    col = max(col - (len(out) - e.start), 0)
                    raise JsonError(f"{_JSON_MSGS['unicode']} at line {line} column {col}")
            if c == 92:
                e = self.next()
                if e is None:
                    raise self.error("eof_string")
                simple = {34: b'"', 92: b"\\", 47: b"/", 98: b"\b", 102: b"\f", 110: b"\n", 114: b"\r", 116: b"\t"}
                if e in simple:
                    out += simple[e]
                elif e == ord("u"):
                    out += self.unicode_escape()
                else:
                    raise self.error("escape")
            else:
                # A control character: the error points just past it.
                raise self.error("control")

    def hex4(self) -> int:
        if len(self.b) - self.i < 4:
            self.i = len(self.b)
            raise self.error("eof_string")
        h = self.b[self.i : self.i + 4]
        self.i += 4
        if not re.fullmatch(rb"[0-9a-fA-F]{4}", h):
            raise self.error("escape")
        return int(h, 16)

    def unicode_escape(self) -> bytes:
        """read.rs `parse_unicode_escape` with `validate`: surrogates must pair."""
        n = self.hex4()
        if 0xDC00 <= n <= 0xDFFF:
            raise self.error("lone_leading")
        if not (0xD800 <= n <= 0xDBFF):
            return chr(n).encode("utf-8")
        for want in (92, ord("u")):
            p = self.peek()
            if p is None:
                raise self.error("eof_string")
            self.i += 1
            if p != want:
                raise self.error("hex_end")
        n2 = self.hex4()
        if not (0xDC00 <= n2 <= 0xDFFF):
            raise self.error("lone_leading")
        return chr(0x10000 + ((n - 0xD800) << 10) + (n2 - 0xDC00)).encode("utf-8")


def json_parse(b: bytes):
    """serde_json::from_slice::<Value>; raises JsonError with serde_json's message."""
    return _JsonParser(b).parse()


def json_kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, JNum):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _json_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def json_text(v) -> str:
    """serde_json's compact `Value::to_string()`: keys sorted (BTreeMap), floats by zmij."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, JNum):
        return str(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, list):
        return "[" + ",".join(json_text(x) for x in v) + "]"
    return "{" + ",".join(_json_str(k) + ":" + json_text(v[k]) for k in sorted(v)) + "}"


# --------------------------------------------------------------------------------------------
# Values (transform/values.rs). A value is a (tag, payload) pair:
# ("null", None) ("i64", int) ("f64", float) ("dec", unscaled int) ("bool", bool)
# ("str", str) ("bin", bytes) ("date", days) ("ts", UTC microseconds)
# --------------------------------------------------------------------------------------------

NULL = ("null", None)
MIN_TS_US = -62_135_596_800_000_000
MAX_TS_US = 253_402_300_799_999_999


class RowError(Exception):
    def __init__(self, column: Optional[str], reason: str):
        super().__init__(reason)
        self.column = column
        self.reason = reason


class ValueError_(Exception):
    """A value does not parse; the message is the Rust reason."""


def trim_ascii(b: bytes) -> bytes:
    # Rust's `<[u8]>::trim_ascii`: ASCII whitespace is \t \n \x0c \r and space.
    return b.strip(b" \t\n\x0c\r")


def preview(b: bytes) -> str:
    s = b[:40].decode("utf-8", "replace")
    return s + "…" if len(b) > 40 else s


def parse_i64(b: bytes) -> int:
    neg = b[:1] == b"-"
    digits = b[1:] if b[:1] in (b"-", b"+") else b
    if not digits or len(digits) > 19 or not all(48 <= c <= 57 for c in digits):
        raise ValueError_(f"`{preview(b)}` is not an integer")
    v = int(digits)
    v = -v if neg else v
    if not (-(2**63) <= v <= 2**63 - 1):
        raise ValueError_(f"`{preview(b)}` is out of the 64-bit integer range")
    return v


def parse_bool(b: bytes) -> bool:
    if len(b) <= 5:
        lb = b.lower()
        if lb in (b"true", b"t", b"yes", b"y", b"1"):
            return True
        if lb in (b"false", b"f", b"no", b"n", b"0"):
            return False
    raise ValueError_(f"`{preview(b)}` is not a boolean (true/false, t/f, yes/no, 1/0)")


def parse_decimal(b: bytes, precision: int, scale: int) -> int:
    word = b[1:] if b[:1] in (b"-", b"+") else b
    if word.lower() in (b"nan", b"inf", b"infinity"):
        raise ValueError_(
            f"`{preview(b)}` cannot be stored in a decimal column (type the column string to keep it)"
        )
    neg = b[:1] == b"-"
    rest = b[1:] if b[:1] in (b"-", b"+") else b
    if b"." in rest:
        ip, fp = rest.split(b".", 1)
    else:
        ip, fp = rest, b""
    ok = (ip or fp) and all(48 <= c <= 57 for c in ip) and all(48 <= c <= 57 for c in fp)
    if not ok:
        raise ValueError_(f"`{preview(b)}` is not a decimal({precision},{scale})")
    frac = fp
    while len(frac) > scale and frac.endswith(b"0"):
        frac = frac[:-1]
    if len(frac) > scale:
        raise ValueError_(f"`{preview(b)}` has more than {scale} decimal places")
    isig = ip
    while len(isig) > 1 and isig[:1] == b"0":
        isig = isig[1:]
    int_digits = 0 if isig in (b"0", b"") else len(isig)
    if int_digits + scale > precision:
        raise ValueError_(f"`{preview(b)}` does not fit decimal({precision},{scale})")
    v = int(isig or b"0") * 10**scale + (int(frac.ljust(scale, b"0")) if scale else 0)
    return -v if neg else v


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days from 1970-01-01 (proleptic Gregorian; Howard Hinnant's algorithm, as values.rs)."""
    y = y - 1 if m <= 2 else y
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719_468
    era = (z if z >= 0 else z - 146_096) // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def _days_in_month(y: int, m: int) -> int:
    if m in (1, 3, 5, 7, 8, 10, 12):
        return 31
    if m in (4, 6, 9, 11):
        return 30
    return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28


def _digits(b: bytes) -> Optional[int]:
    if not b or not all(48 <= c <= 57 for c in b):
        return None
    return int(b)


def _ymd(b: bytes) -> Optional[int]:
    if len(b) != 10 or b[4] != 45 or b[7] != 45:
        return None
    y, m, d = _digits(b[0:4]), _digits(b[5:7]), _digits(b[8:10])
    if y is None or m is None or d is None:
        return None
    if not (1 <= m <= 12) or d == 0 or d > _days_in_month(y, m) or y == 0:
        return None
    return days_from_civil(y, m, d)


def _time_of_day(rest: bytes):
    is_time = len(rest) >= 6 and rest[0] in (ord("T"), ord("t"), ord(" ")) and rest[3] == ord(":")
    if not is_time:
        return 0, 0, rest
    h, mi = _digits(rest[1:3]), _digits(rest[4:6])
    if h is None or mi is None:
        return None
    rest = rest[6:]
    s = 0
    micros = 0
    if rest[:1] == b":":
        s = _digits(rest[1:3]) if len(rest) >= 3 else None
        if s is None:
            return None
        rest = rest[3:]
        if rest[:1] == b".":
            n = 0
            while n < len(rest) - 1 and 48 <= rest[1 + n] <= 57:
                n += 1
            if n == 0 or n > 9:
                return None
            micros = int(rest[1 : 1 + min(n, 6)].ljust(6, b"0"))
            rest = rest[1 + n :]
    if h > 23 or mi > 59 or s > 59:
        return None
    return h * 3600 + mi * 60 + s, micros, rest


def _utc_offset(rest: bytes) -> Optional[int]:
    if rest in (b"", b"Z", b"z", b" UTC", b"UTC", b" Z", b" GMT"):
        return 0
    r = rest[1:] if rest[:1] == b" " else rest
    if not r or r[0] not in (43, 45):
        return None
    sign = 1 if r[0] == 43 else -1
    r = r[1:]
    if len(r) == 2:
        hh, mm = _digits(r), 0
    elif len(r) == 4:
        hh, mm = _digits(r[:2]), _digits(r[2:])
    elif len(r) == 5 and r[2] == 58:
        hh, mm = _digits(r[:2]), _digits(r[3:])
    else:
        return None
    if hh is None or mm is None or hh > 18 or mm > 59:
        return None
    return sign * (hh * 3600 + mm * 60)


def _fast_timestamp(b: bytes) -> Optional[int]:
    if len(b) < 10:
        return None
    day = _ymd(b[:10])
    if day is None:
        return None
    t = _time_of_day(b[10:])
    if t is None:
        return None
    secs_of_day, micros, rest = t
    off = _utc_offset(rest)
    if off is None:
        return None
    return (day * 86400 + secs_of_day - off) * 1_000_000 + micros


def parse_date(b: bytes) -> int:
    day = _ymd(b)
    if day is None:
        us = _fast_timestamp(b)
        if us is not None:
            day = us // 86_400_000_000
    if day is None:
        raise ValueError_(f"`{preview(b)}` is not a date (YYYY-MM-DD)")
    return day


def epoch_to_us(v: int, unit: str) -> int:
    millis = unit == "millis" or (unit == "auto" and abs(v) >= 100_000_000_000)
    us = v * (1000 if millis else 1_000_000)
    if not (-(2**63) <= us <= 2**63 - 1) or not (MIN_TS_US <= us <= MAX_TS_US):
        raise ValueError_(f"epoch {v} is outside years 0001–9999")
    return us


# chrono strftime → Python strptime, for the table's `timestamp_formats`. A specifier without a
# faithful translation is refused when the plan is compiled (`compile_timestamp_format`): passed
# through, strptime would refuse every value, and every row would be quarantined where the Rust
# transform accepts it.
_CHRONO_TO_PY = {
    "%Y": "%Y", "%m": "%m", "%d": "%d", "%H": "%H", "%M": "%M", "%S": "%S", "%y": "%y",
    "%b": "%b", "%B": "%B", "%h": "%b", "%a": "%a", "%A": "%A", "%p": "%p", "%I": "%I",
    "%j": "%j", "%z": "%z", "%Z": "%Z", "%%": "%%", "%e": "%d", "%T": "%H:%M:%S",
    "%D": "%m/%d/%y", "%F": "%Y-%m-%d", "%R": "%H:%M", "%:z": "%z",
}
# Numeric specifiers that take chrono's padding modifiers (`%-d`, `%_d`, `%0d`): strptime reads
# these with or without a leading zero already.
_PADDABLE = set("dmHMSIjey")
# chrono's fractional seconds, emulated (strptime's %f reads at most 6 digits, scales them, and
# has no optional dot): the regex of the fraction, and whether its digits are a fraction to scale
# to nanoseconds (`%.f`, `%.3f`, `%3f`…) or a whole number of nanoseconds (`%f`, as chrono parses
# it: "123" is 123 ns). `%.f` and `%.Nf` take the dot and digits only when a dot is there;
# `%.f` reads 1 to 9 digits and skips any beyond; `%Nf` and `%.Nf` read exactly N.
_FRACTIONS = {
    "%.f": (r"(?:\.(?P<sluicedigits>\d+))?", True),
    "%.3f": (r"(?:\.(?P<sluicedigits>\d{3}))?", True),
    "%.6f": (r"(?:\.(?P<sluicedigits>\d{6}))?", True),
    "%.9f": (r"(?:\.(?P<sluicedigits>\d{9}))?", True),
    "%3f": (r"(?P<sluicedigits>\d{3})", True),
    "%6f": (r"(?P<sluicedigits>\d{6})", True),
    "%9f": (r"(?P<sluicedigits>\d{9})", True),
    "%f": (r"(?P<sluicedigits>\d{1,9})", False),
}
_SPEC_RE = re.compile(r"%(?:\.[369]?f|[369]f|:z|[-_0]?.)?", re.DOTALL)


@dataclass(frozen=True)
class TsFormat:
    """One `timestamp_formats` entry, compiled: the strptime format (the fraction specifier, if
    any, left out) and, when the format has a fraction, the regex that finds it in a value."""

    chrono: str
    py: str
    frac: Optional[re.Pattern]
    frac_scaled: bool


_TIME_RE = None


def compile_timestamp_format(chrono_fmt: str) -> TsFormat:
    """ConfigError naming the specifier when the format holds one this job cannot parse as
    chrono does."""
    pre: list[str] = []
    post: list[str] = []
    frac: Optional[tuple[str, bool]] = None
    pos = 0
    for m in _SPEC_RE.finditer(chrono_fmt):
        (post if frac else pre).append(chrono_fmt[pos : m.start()])
        pos = m.end()
        spec = m.group(0)
        if spec in _FRACTIONS:
            if frac is not None:
                raise ConfigError(f"timestamp format `{chrono_fmt}`: more than one fractional-seconds specifier")
            frac = _FRACTIONS[spec]
            continue
        base = spec
        if len(spec) == 3 and spec[1] in "-_0" and spec[2] in _PADDABLE:
            base = "%" + spec[2]
        py = _CHRONO_TO_PY.get(base)
        if py is None:
            raise ConfigError(
                f"timestamp format `{chrono_fmt}`: the specifier `{spec}` is not supported by the Glue job"
            )
        (post if frac else pre).append(py)
    (post if frac else pre).append(chrono_fmt[pos:])
    py_pre, py_post = "".join(pre), "".join(post)
    if frac is None:
        return TsFormat(chrono_fmt, py_pre, None, False)
    global _TIME_RE
    if _TIME_RE is None:
        import _strptime

        _TIME_RE = _strptime.TimeRE()
    try:
        rx = re.compile(_TIME_RE.pattern(py_pre) + "(?P<sluicefrac>" + frac[0] + ")" + _TIME_RE.pattern(py_post), re.IGNORECASE)
    except re.error as e:
        raise ConfigError(f"timestamp format `{chrono_fmt}`: not supported by the Glue job ({e})") from e
    return TsFormat(chrono_fmt, py_pre + py_post, rx, frac[1])


_TS_FORMATS: dict[str, TsFormat] = {}


def _ts_format(f: str) -> TsFormat:
    got = _TS_FORMATS.get(f)
    if got is None:
        got = _TS_FORMATS[f] = compile_timestamp_format(f)
    return got


def _strptime_us(s: str, f: TsFormat) -> Optional[int]:
    """The value as microseconds since the epoch (a naive value is UTC), or None when it does
    not match. chrono keeps nanoseconds; `timestamp_micros` truncates them."""
    ns = 0
    if f.frac is not None:
        m = f.frac.fullmatch(s)
        if m is None:
            return None
        digits = m.group("sluicedigits")
        if digits:
            ns = int(digits[:9].ljust(9, "0")) if f.frac_scaled else int(digits)
        s = s[: m.start("sluicefrac")] + s[m.end("sluicefrac") :]
    try:
        dt = _dt.datetime.strptime(s, f.py)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds + ns // 1000


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def parse_timestamp(b: bytes, formats: list[str], epoch_unit: str) -> int:
    us = _fast_timestamp(b)
    if us is not None:
        if MIN_TS_US <= us <= MAX_TS_US:
            return us
        raise ValueError_(f"`{preview(b)}` is outside years 0001–9999")
    numeric = bool(b) and b != b"-" and all((48 <= c <= 57) or (i == 0 and c == 45) for i, c in enumerate(b))
    if numeric:
        try:
            v = parse_i64(b)
        except ValueError_:
            v = None
        if v is not None:
            return epoch_to_us(v, epoch_unit)
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        s = None
    if s is not None:
        for f in formats:
            us = _strptime_us(s, _ts_format(f))
            if us is None:
                continue
            if MIN_TS_US <= us <= MAX_TS_US:
                return us
            raise ValueError_(f"`{preview(b)}` is outside years 0001–9999")
    raise ValueError_(f"`{preview(b)}` is not a timestamp")


_FLOAT_RE = re.compile(rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))")


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VAL = {c: i for i, c in enumerate(_B64)}


def parse_base64(b: bytes) -> bytes:
    """base64 0.22's STANDARD engine (canonical padding, no trailing bits), with its
    `DecodeError` text: the Rust reason is `not base64: <that text>`."""

    def bad(msg: str):
        return ValueError_(f"not base64: {msg}")

    n = len(b)
    rem = n % 4
    if rem == 1 and b[-1] != 61 and b[-1] not in _B64_VAL:
        raise bad(f"Invalid symbol {b[-1]}, offset {n - 1}.")
    body_end = n - rem if rem else max(n - 4, 0)
    for i in range(body_end):
        if b[i] not in _B64_VAL:
            raise bad(f"Invalid symbol {b[i]}, offset {i}.")
    morsels: list[int] = []
    pads = 0
    first_pad = 0
    last_symbol = 0
    for j, c in enumerate(b[body_end:]):
        if c == 61:
            if j < 2:
                raise bad(f"Invalid symbol {c}, offset {body_end + j}.")
            if pads == 0:
                first_pad = j
            pads += 1
            continue
        if pads:
            raise bad(f"Invalid symbol 61, offset {body_end + first_pad}.")
        last_symbol = c
        if c not in _B64_VAL:
            raise bad(f"Invalid symbol {c}, offset {body_end + j}.")
        morsels.append(_B64_VAL[c])
    if n > body_end and len(morsels) < 2:
        raise bad(f"Invalid input length: {body_end + len(morsels)}")
    if (pads + len(morsels)) % 4 != 0:
        raise bad("Invalid padding")
    num = 0
    for k, m in enumerate(morsels):
        num |= m << (26 - 6 * k)
    keep = len(morsels) * 6 // 8
    mask = (0xFFFFFFFF >> (keep * 8)) & 0xFFFFFFFF
    if num & mask:
        raise bad(f"Invalid last symbol {last_symbol}, offset {body_end + len(morsels) - 1}.")
    return base64.b64decode(b)


def parse_text(b: bytes, ty: ColType, t: Table):
    k = ty.kind
    if k in ("string", "json"):
        try:
            return ("str", b.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError_(f"invalid UTF-8 at byte {e.start}")
    if k == "int":
        return ("i64", parse_i64(trim_ascii(b)))
    if k == "float":
        tb = trim_ascii(b)
        if _FLOAT_RE.fullmatch(tb):
            return ("f64", float(tb))
        raise ValueError_(f"`{preview(tb)}` is not a number")
    if k == "decimal":
        return ("dec", parse_decimal(trim_ascii(b), ty.precision, ty.scale))
    if k == "bool":
        return ("bool", parse_bool(trim_ascii(b)))
    if k == "binary":
        return ("bin", parse_base64(trim_ascii(b)))
    if k == "date":
        return ("date", parse_date(trim_ascii(b)))
    return ("ts", parse_timestamp(trim_ascii(b), t.timestamp_formats, t.epoch_unit))


def parse_json_value(v, ty: ColType, t: Table):
    """values.rs `parse_json`."""
    k = ty.kind
    if v is None:
        return NULL
    if isinstance(v, str):
        return parse_text(v.encode("utf-8"), ty, t)
    if isinstance(v, JNum):
        if k == "int":
            i = v.as_i64()
            if i is None:
                raise ValueError_(f"{v} is not a 64-bit integer")
            return ("i64", i)
        if k == "float":
            return ("f64", v.as_f64())
        if k == "timestamp":
            i = v.as_i64()
            if i is None:
                raise ValueError_(f"{v} is not an epoch timestamp")
            return ("ts", epoch_to_us(i, t.epoch_unit))
        if k == "string":
            return ("str", str(v))
        return parse_text(str(v).encode(), ty, t)
    if isinstance(v, bool):
        if k == "bool":
            return ("bool", v)
        if k == "string":
            return ("str", "true" if v else "false")
    if isinstance(v, (list, dict)) and k in ("string", "json"):
        return ("str", json_text(v))
    raise ValueError_(f"a JSON {json_kind(v)} cannot be a {ty}")


# --------------------------------------------------------------------------------------------
# Rows (transform/engine/row.rs)
# --------------------------------------------------------------------------------------------

REDSHIFT_VARCHAR_MAX_BYTES = 65_535
REDSHIFT_VARBYTE_MAX_BYTES = 16_777_216
REDSHIFT_COPY_MAX_ROW_BYTES = 4 * 1024 * 1024


@dataclass
class Header:
    field_of_input: list[Optional[int]]
    expected_fields: Optional[int]
    missing_columns: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)


class HeaderError(Exception):
    """The object cannot be read at all (TransformError::Header)."""


def fields_without_header(plan: Plan) -> Optional[Header]:
    t = plan.table
    if t.format == "jsonl":
        return Header([], None)
    if not t.header:
        return Header(list(range(len(plan.inputs))), len(plan.inputs))
    return None


def read_header(plan: Plan, rec: Record, source_key: str) -> Header:
    """engine/header.rs `read_header`."""
    if rec.oversize:
        raise HeaderError(f"object {source_key}: the header record is over max_record_bytes")
    names = [trim_ascii(f).decode("utf-8", "replace") for f in rec.fields or []]

    def find(name: str) -> Optional[int]:
        if name in names:
            return names.index(name)
        if name in BUILTIN_COLUMNS:
            return None
        norm = snake_case(name)
        for j, n in enumerate(names):
            if not n.startswith("_") and snake_case(n) == norm:
                return j
        return None

    fmap = [find(inp.name) for inp in plan.inputs]
    missing = []
    for i, f in enumerate(fmap):
        if f is not None:
            continue
        if _object_needs(plan, i):
            raise HeaderError(
                f"object {source_key}: the header lacks required column `{plan.inputs[i].name}` "
                f"({len(names)} header fields; is the header row missing?)"
            )
        missing.append(plan.inputs[i].name)
    unknown = [n for j, n in enumerate(names) if j not in fmap]
    return Header(fmap, len(names), missing, unknown)


def _object_needs(plan: Plan, i: int) -> bool:
    slot = next((s for s, sl in enumerate(plan.slots) if sl.input == i), None)
    return (
        any(sl.input == i and sl.required for sl in plan.slots)
        or slot == plan.partition_slot
        or (slot is not None and (slot in plan.key_slots or plan.order_slot == slot))
    )


_MISSING = object()


def _too_big(column: str, n: int, max_field: int) -> RowError:
    return RowError(column, f"field is {n} bytes, over max_field_bytes ({max_field})")


def read_row(plan: Plan, header: Header, rec: Record):
    """A record to one typed value per slot and its (year, month); RowError when the row
    goes to quarantine. engine/row.rs `read_into`."""
    t = plan.table
    o = t.output
    if rec.oversize:
        raise RowError(None, f"record is {rec.total_bytes} bytes, over max_record_bytes ({o.max_record_bytes})")
    doc = None
    if t.format == "jsonl":
        try:
            doc = json_parse(rec.data)
        except JsonError as e:
            raise RowError(None, f"bad JSON: {e}")
        if not isinstance(doc, dict):
            raise RowError(None, f"expected a JSON object, found a {json_kind(doc)}")
    elif header.expected_fields is not None and len(rec.fields or []) != header.expected_fields:
        raise RowError(None, f"expected {header.expected_fields} fields, found {len(rec.fields or [])}")
    # One cell per input: ("text", bytes) | ("json", value) | _MISSING
    cells: list = []
    for i, inp in enumerate(plan.inputs):
        if doc is not None:
            v = doc.get(inp.name)
            if v is None:  # absent or JSON null
                cells.append(_MISSING)
            elif isinstance(v, str):
                cells.append(("text", v.encode("utf-8")))
            else:
                cells.append(("json", v))
        else:
            j = header.field_of_input[i] if i < len(header.field_of_input) else None
            cells.append(("text", rec.fields[j]) if j is not None else _MISSING)  # type: ignore[index]
    null = []
    cols: list = []
    for inp, cell in zip(plan.inputs, cells):
        is_null = False
        if cell is _MISSING:
            is_null = True
        elif cell[0] == "text":
            b = cell[1]
            if len(b) > o.max_field_bytes:
                raise _too_big(inp.name, len(b), o.max_field_bytes)
            if trim_ascii(b) in inp.null_tokens:
                is_null = True
        null.append(is_null)
        if inp.is_json:
            cols.append(_json_column(inp.name, cell, is_null))
    vals = []
    for sl in plan.slots:
        inp = plan.inputs[sl.input]
        try:
            if null[sl.input]:
                v = NULL
            elif inp.is_json:
                cur = cols[inp.json_index]
                for p in sl.json_path:
                    cur = cur.get(p, _MISSING) if isinstance(cur, dict) else _MISSING
                    if cur is _MISSING:
                        break
                if cur is _MISSING:
                    v = NULL
                elif isinstance(cur, str) and len(cur.encode("utf-8")) > o.max_field_bytes:
                    raise _too_big(sl.name, len(cur.encode("utf-8")), o.max_field_bytes)
                else:
                    v = parse_json_value(cur, sl.ty, t)
            else:
                cell = cells[sl.input]
                if cell[0] == "text":
                    b = trim_ascii(cell[1]) if inp.trim else cell[1]
                    v = parse_text(b, sl.ty, t)
                else:
                    v = parse_json_value(cell[1], sl.ty, t)
        except ValueError_ as e:
            raise RowError(sl.name, str(e))
        if v[0] == "null" and sl.required:
            raise RowError(sl.name, "required value is missing")
        vals.append(v)
    ym = _partition_of(plan, vals)
    if plan.order_slot is not None and vals[plan.order_slot][0] == "null":
        raise RowError(
            plan.slots[plan.order_slot].name,
            "the dedup ordering value is missing, so the row's version is unknown",
        )
    _check_warehouse_sizes(plan, vals)
    return vals, ym


def _json_column(name: str, cell, is_null: bool):
    if is_null or cell is _MISSING:
        return None
    if cell[0] == "text":
        try:
            d = json_parse(cell[1])
        except JsonError as e:
            raise RowError(name, f"bad JSON: {e}")
    else:
        d = cell[1]
    if not isinstance(d, dict):
        raise RowError(name, f"expected a JSON object, found a {json_kind(d)}")
    return d


def _partition_of(plan: Plan, vals) -> tuple[int, int]:
    tag, v = vals[plan.partition_slot]
    col = plan.slots[plan.partition_slot].name
    if tag == "ts":
        y, m, _ = civil_from_days(v // 86_400_000_000)
    elif tag == "date":
        y, m, _ = civil_from_days(v)
    else:
        raise RowError(col, "partition column is missing, so the row has no year/month")
    if not (1 <= y <= 9999):
        raise RowError(col, f"year {y} is outside 0001-9999")
    return y, m


def _check_warehouse_sizes(plan: Plan, vals) -> None:
    if not plan.sized_outs:
        return
    row = 64 * (len(plan.outs) - len(plan.sized_outs))
    for i in plan.sized_outs:
        out = plan.outs[i]
        tag, v = vals[out.slot]
        if tag == "str":
            n, ty, mx = len(v.encode("utf-8")), "VARCHAR", REDSHIFT_VARCHAR_MAX_BYTES
        elif tag == "bin":
            n, ty, mx = len(v), "VARBYTE", REDSHIFT_VARBYTE_MAX_BYTES
        else:
            continue
        if n > mx:
            raise RowError(out.name, f"value is {n} bytes; Redshift {ty} holds at most {mx} bytes")
        row += n
    if row > REDSHIFT_COPY_MAX_ROW_BYTES:
        raise RowError(
            None,
            f"the row's values add up to about {row} bytes; Redshift's COPY takes rows of at most "
            f"{REDSHIFT_COPY_MAX_ROW_BYTES} bytes",
        )


# --------------------------------------------------------------------------------------------
# Dedup and PII (engine/dedup.rs, engine/pii.rs)
# --------------------------------------------------------------------------------------------


def dedup_key(plan: Plan, vals) -> Optional[tuple]:
    """The key values, type-tagged as `canonical_bytes` tags them (so `1` and `"1"` differ;
    an int and a timestamp share a tag, as in Rust; a float by its bits)."""
    if not plan.key_slots:
        return None
    out = []
    for s in plan.key_slots:
        tag, v = vals[s]
        if tag == "ts":
            tag = "i64"
        elif tag == "f64":
            v = struct.pack("<d", v)  # by its bits, as Rust's `to_bits`
        out.append((tag, v))
    return tuple(out)


def dedup_version(plan: Plan, vals) -> int:
    if plan.order_slot is None:
        return 0
    tag, v = vals[plan.order_slot]
    return v if tag in ("i64", "ts", "date") else -(2**63)


def canonical_text(v) -> bytes:
    tag, x = v
    if tag == "i64" or tag == "dec":
        return str(x).encode()
    if tag == "f64":
        return rust_f64_display(x).encode()
    if tag == "bool":
        return b"true" if x else b"false"
    if tag == "str":
        return x.encode("utf-8")
    if tag == "bin":
        return x
    if tag == "date":
        y, m, d = civil_from_days(x)
        return f"{y:04d}-{m:02d}-{d:02d}".encode()
    if tag == "ts":
        y, m, d = civil_from_days(x // 86_400_000_000)
        s = x % 86_400_000_000
        return (
            f"{y:04d}-{m:02d}-{d:02d}T{s // 3_600_000_000:02d}:{s // 60_000_000 % 60:02d}:"
            f"{s // 1_000_000 % 60:02d}.{s % 1_000_000:06d}Z"
        ).encode()
    return b""


def _ymd_of(v) -> Optional[tuple[int, int, int]]:
    tag, x = v
    if tag == "date":
        return civil_from_days(x)
    if tag == "ts":
        return civil_from_days(x // 86_400_000_000)
    return None


def age_band(dob, at, band_years: int) -> Optional[str]:
    a, b = _ymd_of(dob), _ymd_of(at)
    if a is None or b is None:
        return None
    age = b[0] - a[0]
    if (b[1], b[2]) < (a[1], a[2]):
        age -= 1
    if age < 0:
        return None
    w = max(band_years, 1)
    lo = age // w * w
    return str(lo) if w == 1 else f"{lo}-{lo + w - 1}"


def output_values(plan: Plan, vals, hash_key: Optional[bytes]) -> list:
    """One value per output column after the PII rules, as the Spark row holds it: ints,
    floats, decimal.Decimal, bools, str, bytes, dates as days and timestamps as micros (the
    job converts those two in Spark)."""
    out = []
    for o in plan.outs:
        v = vals[o.slot]
        if o.kind == "plain":
            out.append(_spark_value(v, o.ty))
        elif o.kind == "hash":
            if v[0] == "null":
                out.append(None)
            else:
                if hash_key is None:
                    raise ConfigError("the table hashes PII but the hash key is missing or unusable")
                out.append(hmac.new(hash_key, canonical_text(v), hashlib.sha256).hexdigest())
        elif o.kind == "year":
            ymd = _ymd_of(v)
            out.append(ymd[0] if ymd else None)
        else:
            out.append(age_band(v, vals[o.as_of_slot], o.band_years))
    return out


def _spark_value(v, ty: ColType):
    tag, x = v
    if tag == "null":
        return None
    if tag == "dec":
        sign = 1 if x < 0 else 0
        digits = tuple(int(c) for c in str(abs(x)))
        return decimal.Decimal((sign, digits, -ty.scale))
    if tag == "bin":
        return bytearray(x)
    return x


# --------------------------------------------------------------------------------------------
# Quarantine records and the manifest (lake/quarantine.rs, lake/manifest.rs)
# --------------------------------------------------------------------------------------------


def reencode_csv(fields: list[bytes], delim: int, quote: int) -> str:
    out = bytearray()
    for i, f in enumerate(fields):
        if i:
            out.append(delim)
        if any(c in (delim, quote, 10, 13) for c in f):
            out.append(quote)
            for c in f:
                if c == quote:
                    out.append(quote)
                out.append(c)
            out.append(quote)
        else:
            out += f
    return out.decode("utf-8", "replace")


def quarantine_line(source_key: str, t: Table, rec: Record, column: Optional[str], reason: str) -> str:
    """One quarantine record as serde_json writes it (compact, fields in struct order,
    `raw_truncated` only when set), newline included."""
    if t.format == "jsonl" or rec.oversize:
        raw = rec.data.decode("utf-8", "replace")
    else:
        raw = reencode_csv(rec.fields or [], t.delimiter, t.quote)
    parts = [
        '"object":' + _json_str(source_key),
        '"line":' + str(rec.start_line(t.format)),
        '"column":' + (_json_str(column) if column is not None else "null"),
        '"reason":' + _json_str(reason),
        '"raw":' + _json_str(raw),
    ]
    if rec.oversize:
        parts.append('"raw_truncated":true')
    return "{" + ",".join(parts) + "}\n"


def object_quarantine_line(source_key: str, column: Optional[str], reason: str) -> str:
    """The record of a whole object refused (line 0, no raw text)."""
    return (
        "{" + '"object":' + _json_str(source_key) + ',"line":0,"column":'
        + (_json_str(column) if column is not None else "null")
        + ',"reason":' + _json_str(reason) + ',"raw":""}\n'
    )


def manifest_json(
    table: str,
    source_key: str,
    source_etag: Optional[str],
    source_bytes: int,
    columns: list[dict],
    files: list[dict],
    counts: dict,
    quarantine_key: Optional[str],
) -> bytes:
    """`Manifest::to_json`: serde_json's pretty printer (two spaces), fields in struct order,
    counts flattened at the top level, no trailing newline."""
    m = {
        "version": MANIFEST_VERSION,
        "table": table,
        "source_key": source_key,
        "source_etag": source_etag,
        "source_bytes": source_bytes,
        "columns": [{"name": c["name"], "glue_type": c["glue_type"], "nullable": c["nullable"]} for c in columns],
        "files": [
            {k: f[k] for k in ("key", "year", "month", "rows", "bytes", "etag")} for f in files
        ],
        "rows_read": counts["rows_read"],
        "rows_written": counts["rows_written"],
        "rows_duplicate": counts["rows_duplicate"],
        "rows_quarantined": counts["rows_quarantined"],
        "quarantine_key": quarantine_key,
    }
    return json.dumps(m, indent=2, ensure_ascii=False).encode("utf-8")


def process_record(plan: Plan, header: Header, source_key: str, row_no: int, rec: Record, hash_key: Optional[bytes]):
    """One record's fate: ("q", row_no, quarantine line) or
    ("ok", row_no, dedup key, version, year, month, output values)."""
    try:
        vals, (y, m) = read_row(plan, header, rec)
    except RowError as e:
        return ("q", row_no, quarantine_line(source_key, plan.table, rec, e.column, e.reason))
    return (
        "ok", row_no, dedup_key(plan, vals), dedup_version(plan, vals),
        f"{y:04d}", f"{m:02d}", output_values(plan, vals, hash_key),
    )
