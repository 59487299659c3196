//! The handler and the sink on a local lake, with the Kinesis samples of `events/` and small
//! batches built here; a wrapper store fails chosen writes and reads to exercise the
//! batch-item-failure paths. The bootstrap under `cargo lambda` against moto S3 is tested in
//! `tests/tests/cdc_sink_invoke.rs`.

use std::error::Error;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use sluice::cdc::sink::{parse, parse_spilled, Parsed, SinkReport};
use sluice::config::Pipeline;
use sluice::lake::quarantine::QuarantineRecord;
use sluice::lake::{layout, LakeError, LocalStore, ObjectMeta, ObjectStore, PutMode, PutResult};
use sluice::lambda::ErrorKind;

use super::*;

mod failures;

type TestResult = Result<(), Box<dyn Error>>;

const SAMPLE: &str = include_str!("../../../../events/kinesis-cdc.json");
const SPILL_SAMPLE: &str = include_str!("../../../../events/kinesis-cdc-spill.json");

const SHARD: &str = "shardId-000000000000";
const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/sluice-cdc";
/// The sequence number of record `i` of the first sample (`i + 100` for the spill sample) is
/// this prefix and `8898 + i` (56 digits in all, more than a u128 holds).
const SEQ_PREFIX: &str = "4959033827149025660855969253836157109592157598913658";
/// The spill pointer's object in the spill sample.
const SPILL_KEY: &str = "spill/cdc/orders/22817900-0.json";

/// Two change tables and one plain table (the invoke test runs with the same file).
pub(crate) const PIPELINE: &str = include_str!("../../fixtures/pipeline.toml");

fn seq(i: usize) -> String {
    format!("{SEQ_PREFIX}{}", 8898 + i)
}

fn pipeline() -> Result<Pipeline, Box<dyn Error>> {
    Ok(Pipeline::parse(PIPELINE, "cdc-sink tests")?)
}

/// A local lake in a temp dir (kept alive by the returned guard).
fn local_lake() -> Result<(tempfile::TempDir, Arc<LocalStore>), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(LocalStore::new(dir.path())?);
    Ok((dir, store))
}

fn deps(store: Arc<dyn ObjectStore>) -> Result<Deps, Box<dyn Error>> {
    Ok(Deps {
        store,
        routes: routes_from_pipeline(&pipeline()?),
        emit_metrics: false,
    })
}

async fn run_sink(store: &dyn ObjectStore, event: &Value) -> Result<SinkReport, Box<dyn Error>> {
    let routes = routes_from_pipeline(&pipeline()?);
    let sink = CdcSink {
        store,
        routes: &routes,
    };
    Ok(sink.run(event::records(event)?).await)
}

/// The decoded data of every record of an event, in order.
fn data_of(event: &Value) -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
    let mut out = Vec::new();
    for r in event["Records"].as_array().ok_or("no Records")? {
        let text = r["kinesis"]["data"].as_str().ok_or("no data")?;
        out.push(base64::engine::general_purpose::STANDARD.decode(text)?);
    }
    Ok(out)
}

/// The body an object made of the given records' data would have.
fn jsonl(lines: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for l in lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    body
}

async fn keys(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>, Box<dyn Error>> {
    Ok(store
        .list(prefix)
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect())
}

async fn quarantined(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Vec<QuarantineRecord>, Box<dyn Error>> {
    let body = store.get_bytes(key).await?;
    let mut out = Vec::new();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        out.push(serde_json::from_slice(line)?);
    }
    Ok(out)
}

/// The failure identifiers of a response.
fn failures(r: &KinesisEventResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect()
}

/// A Kinesis event of one shard from `(sequence number, data)` pairs, in the given order.
fn kinesis_event(records: &[(&str, &[u8])]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(seq, data)| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "k",
                    "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1795683600.5
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{SHARD}:{seq}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
                "awsRegion": "us-east-1",
                "eventSourceARN": ARN
            })
        })
        .collect();
    json!({ "Records": records })
}

fn change(table: &str, id: i64, lsn: u64) -> Vec<u8> {
    json!({"op": "c", "before": null, "after": {"id": id},
           "source": {"db": "shop", "schema": "public", "table": table, "lsn": lsn,
                      "txid": 1, "commit_ts": "2026-11-26T09:00:00.000000Z"}})
    .to_string()
    .into_bytes()
}

/// The spilled change the spill sample's pointer names, pretty-printed (line breaks inside).
fn spilled_change() -> Vec<u8> {
    let big = "x".repeat(2048);
    let v = json!({"op": "c", "before": null, "after": {"id": 9, "name": big},
        "source": {"db": "shop", "schema": "public", "table": "orders", "lsn": 22817900u64,
                   "txid": 7467, "commit_ts": "2026-11-26T09:01:00.000000Z"}});
    serde_json::to_vec_pretty(&v).unwrap_or_default()
}

fn without_breaks(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|&c| c != b'\n' && c != b'\r')
        .collect()
}

#[tokio::test]
async fn sample_batch_makes_one_object_per_table_in_sequence_order() -> TestResult {
    let (_dir, store) = local_lake()?;
    let deps = deps(store.clone())?;
    let event: Value = serde_json::from_str(SAMPLE)?;
    let data = data_of(&event)?;

    let response = handle(&deps, event.clone()).await?;
    assert_eq!(failures(&response), Vec::<String>::new());
    let orders = layout::cdc_object_key("orders", SHARD, &seq(0), &seq(3));
    let customers = layout::cdc_object_key("customers", SHARD, &seq(1), &seq(4));
    let mut want = vec![customers.clone(), orders.clone()];
    want.sort();
    assert_eq!(keys(store.as_ref(), layout::RAW_CDC).await?, want);
    // Each event's bytes as they came, one per line, in sequence order.
    assert_eq!(
        store.get_bytes(&orders).await?.to_vec(),
        jsonl(&[&data[0], &data[2], &data[3]])
    );
    assert_eq!(
        store.get_bytes(&customers).await?.to_vec(),
        jsonl(&[&data[1], &data[4]])
    );
    // The escaped line break inside a string stays as it was: one line per event.
    assert!(String::from_utf8(data[0].clone())?.contains("first line\\nsecond line, ü"));
    assert!(keys(store.as_ref(), layout::QUARANTINE).await?.is_empty());
    // The transform gives each object back to its table.
    let p = pipeline()?;
    assert_eq!(
        p.table_for_key(&orders).map(|t| t.name.as_str()),
        Some("orders")
    );
    assert_eq!(
        p.table_for_key(&customers).map(|t| t.name.as_str()),
        Some("customers")
    );

    // Redelivered as a whole (a crash before the response): the same objects, overwritten.
    let report = run_sink(store.as_ref(), &event).await?;
    assert_eq!(keys(store.as_ref(), layout::RAW_CDC).await?, want);
    assert_eq!(
        store.get_bytes(&orders).await?.to_vec(),
        jsonl(&[&data[0], &data[2], &data[3]])
    );
    assert_eq!(report.records, 5);
    assert_eq!(report.written.len(), 2);
    assert_eq!(report.retry_from, None);
    assert_eq!(
        (report.quarantined(), report.spills_resolved, report.retried),
        (0, 0, 0)
    );
    let emf = report.emf_lines(FUNCTION);
    assert_eq!(emf.len(), 3, "{emf:?}");
    let batch: Value = serde_json::from_str(&emf[2])?;
    assert_eq!(batch["RecordsIn"], 5);
    assert_eq!(batch["RecordsQuarantined"], 0);
    let customers_line: Value = serde_json::from_str(&emf[0])?;
    assert_eq!(customers_line["Table"], "customers");
    assert_eq!(customers_line["RecordsWritten"], 2);
    Ok(())
}

#[tokio::test]
async fn spill_pointers_are_resolved_and_bad_records_quarantined() -> TestResult {
    let (_dir, store) = local_lake()?;
    let spilled = spilled_change();
    store
        .put(SPILL_KEY, Bytes::from(spilled.clone()), PutMode::Overwrite)
        .await?;
    let event: Value = serde_json::from_str(SPILL_SAMPLE)?;
    let data = data_of(&event)?;

    let report = run_sink(store.as_ref(), &event).await?;
    assert_eq!(report.retry_from, None, "{:?}", report.failures);
    assert_eq!(report.spills_resolved, 1);
    assert_eq!(report.quarantined(), 3);
    let orders = layout::cdc_object_key("orders", SHARD, &seq(100), &seq(104));
    assert_eq!(
        keys(store.as_ref(), layout::RAW_CDC).await?,
        std::slice::from_ref(&orders)
    );
    // The pointer replaced by the spilled event; the pretty-printed record on one line.
    let pretty = &data[4];
    assert!(pretty.contains(&b'\n'));
    assert_eq!(
        store.get_bytes(&orders).await?.to_vec(),
        jsonl(&[&data[0], &without_breaks(&spilled), &without_breaks(pretty)])
    );
    let written: Value = serde_json::from_slice(&without_breaks(pretty))?;
    assert_eq!(written["after"]["name"], "pretty\tprinted");

    let qkey = layout::cdc_quarantine_key(SHARD, &seq(102), &seq(105));
    assert_eq!(
        keys(store.as_ref(), layout::QUARANTINE).await?,
        std::slice::from_ref(&qkey)
    );
    let q = quarantined(store.as_ref(), &qkey).await?;
    let lines: Vec<u64> = q.iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 4, 6]);
    for (r, i) in q.iter().zip([102, 103, 105]) {
        assert_eq!(r.object, format!("{ARN}/{SHARD}/{}", seq(i)));
        assert_eq!(r.raw.as_bytes(), data[i - 100].as_slice());
        assert_eq!(r.column, None);
    }
    assert!(
        q[0].reason
            .starts_with("not a change event or spill pointer: expected"),
        "{}",
        q[0].reason
    );
    assert!(q[1].reason.contains("public.payments"), "{}", q[1].reason);
    assert!(
        q[2].reason.contains("at op: unknown variant `x`"),
        "{}",
        q[2].reason
    );
    let batch: Value = serde_json::from_str(report.emf_lines(FUNCTION).last().ok_or("emf")?)?;
    assert_eq!(
        (&batch["SpillsResolved"], &batch["RecordsQuarantined"]),
        (&json!(1), &json!(3))
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_spill_object_is_quarantined_with_its_key() -> TestResult {
    let (_dir, store) = local_lake()?;
    let deps = deps(store.clone())?;
    let event: Value = serde_json::from_str(SPILL_SAMPLE)?;
    let data = data_of(&event)?;
    let response = handle(&deps, event).await?;
    assert_eq!(failures(&response), Vec::<String>::new());
    let orders = layout::cdc_object_key("orders", SHARD, &seq(100), &seq(104));
    assert_eq!(
        store.get_bytes(&orders).await?.to_vec(),
        jsonl(&[&data[0], &without_breaks(&data[4])])
    );
    let q = quarantined(
        store.as_ref(),
        &layout::cdc_quarantine_key(SHARD, &seq(101), &seq(105)),
    )
    .await?;
    assert_eq!(q.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 4, 6]);
    assert_eq!(
        q[0].reason,
        format!("the spilled change {SPILL_KEY} does not exist")
    );
    assert_eq!(q[0].raw.as_bytes(), data[1].as_slice());
    Ok(())
}

#[tokio::test]
async fn a_record_whose_data_is_not_base64_is_quarantined_alone() -> TestResult {
    let (_dir, store) = local_lake()?;
    let deps = deps(store.clone())?;
    let mut event = kinesis_event(&[("1", &change("orders", 1, 11)), ("2", b"")]);
    event["Records"][1]["kinesis"]["data"] = json!("%%% not base64");
    let response = handle(&deps, event).await?;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(
        keys(store.as_ref(), layout::RAW_CDC).await?,
        [layout::cdc_object_key("orders", SHARD, "1", "1")]
    );
    let q = quarantined(store.as_ref(), &layout::cdc_quarantine_key(SHARD, "2", "2")).await?;
    assert_eq!(q[0].raw, "%%% not base64");
    assert!(
        q[0].reason.starts_with("the Kinesis record cannot be read"),
        "{}",
        q[0].reason
    );
    Ok(())
}

#[tokio::test]
async fn sequence_numbers_order_as_numbers() -> TestResult {
    let (_dir, store) = local_lake()?;
    let (ten, nine) = (change("orders", 10, 20), change("orders", 9, 19));
    let event = kinesis_event(&[("10", &ten), ("9", &nine)]);
    let report = run_sink(store.as_ref(), &event).await?;
    let key = layout::cdc_object_key("orders", SHARD, "9", "10");
    assert_eq!(
        report.written.first().map(|w| w.key.as_str()),
        Some(key.as_str())
    );
    assert_eq!(store.get_bytes(&key).await?.to_vec(), jsonl(&[&nine, &ten]));
    Ok(())
}

#[tokio::test]
async fn an_event_that_is_not_a_kinesis_batch_fails_as_bad_input() -> TestResult {
    let (_dir, store) = local_lake()?;
    let deps = deps(store.clone())?;
    let mut no_shard = kinesis_event(&[("1", &change("orders", 1, 1))]);
    no_shard["Records"][0]["eventID"] = json!("no-colon");
    let mut bad_seq = kinesis_event(&[("1", &change("orders", 1, 1))]);
    bad_seq["Records"][0]["kinesis"]["sequenceNumber"] = json!("007");
    let mut bad_shard = kinesis_event(&[("1", &change("orders", 1, 1))]);
    bad_shard["Records"][0]["eventID"] = json!("../x:1");
    for (event, says) in [
        (json!({"hello": "world"}), "no `Records` list"),
        (no_shard, "eventID \"no-colon\""),
        (bad_seq, "\"007\""),
        (bad_shard, "\"../x\""),
    ] {
        match handle(&deps, event).await {
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::BadInput);
                assert!(e.message.contains(says), "{} lacks {says}", e.message);
            }
            Ok(r) => return Err(format!("accepted: {r:?}").into()),
        }
    }
    assert!(keys(store.as_ref(), "").await?.is_empty());
    Ok(())
}

/// The shape rules are `cdc::event`'s (tested there); here: what the sink keeps of a record
/// and that a refusal's reason names the field, never a value.
#[test]
fn records_are_read_by_the_event_rules() -> TestResult {
    let ok = change("orders", 1, 5);
    match parse(Bytes::from(ok.clone()))? {
        Parsed::Event { relation, line } => {
            assert_eq!(
                (
                    relation.schema.as_str(),
                    relation.table.as_str(),
                    relation.lsn
                ),
                ("public", "orders", 5)
            );
            assert_eq!(line.to_vec(), ok);
        }
        other => return Err(format!("{other:?}").into()),
    }
    // Pretty-printed: the same bytes without the raw breaks (keys and numbers as they came).
    let pretty = b"{\"op\":\"t\",\r\n \"before\":null,\n \"after\":null,\n \"source\":{\"db\":\"d\",\"schema\":\"s\",\"table\":\"t\",\"lsn\":1,\"txid\":2,\"commit_ts\":\"2026-11-26T09:00:00.000001Z\"}}";
    match parse(Bytes::from_static(pretty))? {
        Parsed::Event { line, .. } => assert_eq!(line.to_vec(), without_breaks(pretty)),
        other => return Err(format!("{other:?}").into()),
    }
    let source = r#""source":{"db":"d","schema":"s","table":"t","lsn":1,"txid":2,"commit_ts":"2026-11-26T09:00:00.000001Z"}"#;
    let pointer = format!(r#"{{"spill":{{"key":"{SPILL_KEY}","bytes":3}},{source}}}"#);
    assert!(matches!(parse(Bytes::from(pointer))?, Parsed::Spill { key, .. } if key == SPILL_KEY));
    let refused = [
        (String::new(), "the record is empty"),
        ("[1]".into(), "JSON, but not an object"),
        ("{\"op\":".into(), "EOF while parsing"),
        (
            format!(r#"{{"op":"c","before":null,"after":{{}},{source}}} trailing"#),
            "trailing characters",
        ),
        (
            format!(r#"{{"op":"z","before":null,"after":null,{source}}}"#),
            "at op: unknown variant `z`",
        ),
        // The event rules: before/after present and as the op requires, no unknown field.
        (
            format!(r#"{{"op":"c",{source}}}"#),
            "missing field `before`",
        ),
        (
            format!(r#"{{"op":"d","before":null,"after":null,{source}}}"#),
            "op \"d\" does not allow before null",
        ),
        (
            format!(r#"{{"op":"c","before":null,"after":{{}},"secret":1,{source}}}"#),
            "unknown field `secret`",
        ),
        (
            format!(r#"{{"op":"c","before":null,"after":"secret value",{source}}}"#),
            "at after: invalid type: string",
        ),
        (
            format!(
                r#"{{"op":"c","before":null,"after":{{}},{}}}"#,
                source.replace(".000001Z", "+02:00")
            ),
            "commit_ts",
        ),
        (
            format!(r#"{{"spill":{{"key":"raw/cdc/t/x.json","bytes":1}},{source}}}"#),
            "spill.key must be a key under spill/cdc/",
        ),
        (
            format!(r#"{{"spill":{{"key":"spill/cdc/../x","bytes":1}},{source}}}"#),
            "spill.key must be a key under",
        ),
        (
            format!(r#"{{"op":"c","spill":{{"key":"{SPILL_KEY}","bytes":1}},{source}}}"#),
            "unknown field `op`",
        ),
    ];
    for (text, says) in refused {
        match parse(Bytes::from(text.clone())) {
            Err(e) => {
                let reason = e.to_string();
                assert!(reason.contains(says), "{text}: {reason} (want {says})");
                assert!(!reason.contains("secret value"), "{reason}");
            }
            Ok(p) => return Err(format!("{text}: taken as {p:?}").into()),
        }
    }
    Ok(())
}

#[test]
fn a_spill_object_must_be_the_event_its_pointer_names() -> TestResult {
    let event = change("orders", 9, 40);
    let Parsed::Event { relation, .. } = parse(Bytes::from(event.clone()))? else {
        return Err("not an event".into());
    };
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&event)?)?;
    assert_eq!(
        parse_spilled(SPILL_KEY, Bytes::from(pretty.clone()), &relation)?.to_vec(),
        without_breaks(&pretty)
    );
    let mut other = relation.clone();
    other.lsn = 41;
    let e = parse_spilled(SPILL_KEY, Bytes::from(event), &other)
        .err()
        .ok_or("another LSN accepted")?;
    assert!(
        e.to_string().contains("shop.public.orders at LSN 40")
            && e.to_string()
                .contains("the pointer names shop.public.orders at LSN 41"),
        "{e}"
    );
    let pointer = format!(
        r#"{{"spill":{{"key":"{SPILL_KEY}","bytes":3}},"source":{}}}"#,
        serde_json::to_string(&relation)?
    );
    let e = parse_spilled(SPILL_KEY, Bytes::from(pointer), &relation)
        .err()
        .ok_or("a pointer accepted")?;
    assert!(
        e.to_string().ends_with("it is another spill pointer"),
        "{e}"
    );
    Ok(())
}

#[test]
fn routes_come_from_the_cdc_tables() -> TestResult {
    let p = pipeline()?;
    let routes = routes_from_pipeline(&p);
    let mut got: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|((s, t), table)| (s.as_str(), t.as_str(), table.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("public", "customers", "customers"),
            ("public", "orders", "orders")
        ]
    );
    check_routes(&p, &routes)?;

    // The relation is the table's `cdc`, not its name: exact case, any schema.
    let renamed = PIPELINE.replacen(
        "cdc = { schema = \"public\", table = \"customers\" }",
        "cdc = { schema = \"Sales\", table = \"Customer List\" }",
        1,
    );
    let p = Pipeline::parse(&renamed, "renamed")?;
    let routes = routes_from_pipeline(&p);
    assert_eq!(
        routes.get(&("Sales".to_string(), "Customer List".to_string())),
        Some(&"customers".to_string())
    );
    assert_eq!(routes.len(), 2);

    let none = Routes::new();
    let e = check_routes(&p, &none).err().ok_or("no tables accepted")?;
    assert!(e.to_string().contains("no cdc table"), "{e}");
    // A plain table whose prefix is longer would take the objects written for `orders`.
    let stolen = format!(
        "{PIPELINE}\n[[tables]]\nname = \"stolen\"\nraw_prefix = \"raw/cdc/orders/shardId-000000000000/\"\n\
         format = \"jsonl\"\npartition_by = \"t\"\ncatalog = {{ database = \"sluice_lake\" }}\n\
         [[tables.columns]]\nname = \"t\"\ntype = \"timestamp\"\n"
    );
    let p = Pipeline::parse(&stolen, "stolen")?;
    let e = check_routes(&p, &routes_from_pipeline(&p))
        .err()
        .ok_or("wrong prefix accepted")?;
    assert!(
        e.to_string()
            .contains("the transform would give them to stolen"),
        "{e}"
    );
    Ok(())
}
