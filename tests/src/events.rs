//! The samples of `events/`, read into the types of the events they stand for
//! (`aws_lambda_events`' `S3Event`, `SqsEvent` and `KinesisEvent`, the loader's manual payload,
//! the S3 test event's documented shape) and into what each function's own parser makes of them.
//!
//! The same files are sent by `cargo lambda invoke --data-file` (here in `tests/tests/`, and by
//! hand) and by `sam local invoke -e`, so a sample that drifts from AWS's shape would pass
//! unnoticed through the handlers, which read the JSON loosely: every field of every sample must
//! be one `aws_lambda_events` knows (its `catch-all-fields` feature collects the others), and
//! every file in `events/` must be listed in [`SAMPLES`].

use std::collections::BTreeSet;
use std::path::Path;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use aws_lambda_events::event::sqs::SqsEvent;
use serde::Deserialize;
use serde_json::Value;

use sluice::cdc::sink::{parse as parse_change, Parsed, SequenceNumber};
use sluice::events::decode_s3_key;
use sluice::lake::layout;
use sluice_redshift_loader::{parse, ManualLoad, Trigger};

use crate::workspace_root;

/// What a sample is, and so how it is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// S3 ObjectCreated notification for objects under `raw/` (the transform's trigger).
    RawPut,
    /// The same for one object too big for a Lambda: the transform starts the Glue job for it.
    RawPutLarge,
    /// The `s3:TestEvent` S3 sends when a notification configuration is saved.
    S3Test,
    /// S3 ObjectCreated notification for `manifests/` invoking the loader directly.
    ManifestPut,
    /// SQS batch whose bodies are S3 notifications for `manifests/` (the loader's deployed
    /// trigger).
    SqsManifests,
    /// The loader's manual payload (backfills, DLQ replays).
    ManualLoad,
    /// A Kinesis batch of one shard as the event source mapping sends it to cdc-sink: how many
    /// of its records are change events, spill pointers, and neither (refused).
    KinesisCdc {
        events: usize,
        spills: usize,
        refused: usize,
    },
    /// The EventBridge scheduled event that starts a wal-decoder or extract run (its content
    /// is not read).
    Schedule,
}

/// Every file in `events/`: its kind and the functions that take it (for people; the invoke
/// tests in `tests/tests/` send each to those functions).
const SAMPLES: &[(&str, Kind, &[&str])] = &[
    ("s3-put.json", Kind::RawPut, &["transform"]),
    ("s3-put-large.json", Kind::RawPutLarge, &["transform"]),
    (
        "s3-test-event.json",
        Kind::S3Test,
        &["transform", "redshift-loader"],
    ),
    ("s3-manifest.json", Kind::ManifestPut, &["redshift-loader"]),
    (
        "sqs-manifests.json",
        Kind::SqsManifests,
        &["redshift-loader"],
    ),
    ("load-manual.json", Kind::ManualLoad, &["redshift-loader"]),
    (
        "kinesis-cdc.json",
        Kind::KinesisCdc {
            events: 5,
            spills: 0,
            refused: 0,
        },
        &["cdc-sink"],
    ),
    (
        "kinesis-cdc-spill.json",
        Kind::KinesisCdc {
            events: 3,
            spills: 1,
            refused: 2,
        },
        &["cdc-sink"],
    ),
    (
        "schedule-wal-decoder.json",
        Kind::Schedule,
        &["wal-decoder"],
    ),
    ("schedule-extract.json", Kind::Schedule, &["extract"]),
];

/// The bucket every sample names (the invoke tests replace it with one of their own).
const BUCKET: &str = "sluice-lake";

/// Above this an object cannot be a Lambda's: the large sample must be well past any sensible
/// `[glue].threshold_bytes`.
const LARGE_BYTES: i64 = 1 << 30;

/// The body of `s3:TestEvent`, as AWS documents it (the event types of `aws_lambda_events` do
/// not include it). Both functions take it by its `Event` field and do nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
#[allow(dead_code)] // read by Deserialize only: the fields must be there
struct S3TestEvent {
    service: String,
    event: String,
    time: String,
    bucket: String,
    request_id: String,
    host_id: String,
}

fn events_dir() -> std::path::PathBuf {
    workspace_root().join("events")
}

fn read(name: &str) -> String {
    let p = events_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `serde_json::from_str` into `T`, failing with the path of the field that does not fit.
fn typed<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> T {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de)
        .unwrap_or_else(|e| panic!("{what} is not a {}: {e}", std::any::type_name::<T>()))
}

fn no_unknown_fields(what: &str, level: &str, other: &serde_json::Map<String, Value>) {
    assert!(
        other.is_empty(),
        "{what}: fields AWS does not send at {level}: {:?}",
        other.keys().collect::<Vec<_>>()
    );
}

/// An `S3Event` of ObjectCreated records in the shape S3 sends: every record complete, keys
/// URL-encoded as S3 sends them. Returns the decoded keys.
fn check_s3_event(what: &str, text: &str) -> (S3Event, Vec<String>) {
    let event: S3Event = typed(what, text);
    assert!(!event.records.is_empty(), "{what}: no records");
    no_unknown_fields(what, "the event", &event.other);
    let keys = event
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| check_s3_record(&format!("{what} record {i}"), r))
        .collect();
    (event, keys)
}

fn check_s3_record(what: &str, r: &S3EventRecord) -> String {
    no_unknown_fields(what, "the record", &r.other);
    no_unknown_fields(what, "s3", &r.s3.other);
    no_unknown_fields(what, "s3.bucket", &r.s3.bucket.other);
    no_unknown_fields(what, "s3.object", &r.s3.object.other);
    assert_eq!(r.event_version.as_deref(), Some("2.1"), "{what}");
    assert_eq!(r.event_source.as_deref(), Some("aws:s3"), "{what}");
    assert!(r.aws_region.is_some(), "{what}: awsRegion");
    assert!(
        r.event_name
            .as_deref()
            .is_some_and(|n| n.starts_with("ObjectCreated:")),
        "{what}: {:?}",
        r.event_name
    );
    assert_eq!(r.s3.schema_version.as_deref(), Some("1.0"), "{what}");
    assert!(r.s3.configuration_id.is_some(), "{what}: configurationId");
    assert!(
        r.principal_id.principal_id.is_some(),
        "{what}: userIdentity"
    );
    assert!(
        r.request_parameters.source_ip_address.is_some(),
        "{what}: requestParameters.sourceIPAddress"
    );
    for h in ["x-amz-request-id", "x-amz-id-2"] {
        assert!(r.response_elements.contains_key(h), "{what}: {h}");
    }
    assert_eq!(r.s3.bucket.name.as_deref(), Some(BUCKET), "{what}");
    assert_eq!(
        r.s3.bucket.arn.as_deref(),
        Some(format!("arn:aws:s3:::{BUCKET}").as_str()),
        "{what}"
    );
    let o = &r.s3.object;
    assert!(o.size.is_some_and(|s| s > 0), "{what}: size {:?}", o.size);
    assert!(
        o.e_tag.as_deref().is_some_and(|t| {
            let (md5, parts) = t.split_once('-').unwrap_or((t, "1"));
            md5.len() == 32
                && md5.bytes().all(|b| b.is_ascii_hexdigit())
                && parts.parse::<u32>().is_ok()
        }),
        "{what}: eTag {:?} (32 hex digits, `-<parts>` for a multipart upload)",
        o.e_tag
    );
    assert!(o.sequencer.is_some(), "{what}: sequencer");
    // AWS never fills it: the handlers decode `key` themselves.
    assert_eq!(o.url_decoded_key, None, "{what}: urlDecodedKey");
    let raw = o.key.as_deref().unwrap_or_else(|| panic!("{what}: no key"));
    decode_s3_key(raw).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The manifests the loader's own parser reads from an S3 notification (`Trigger::S3`).
fn loader_manifests(what: &str, text: &str) -> Vec<String> {
    let v: Value = typed(what, text);
    match parse(&v) {
        Ok(Trigger::S3(n)) => {
            assert!(n.errors.is_empty() && n.ignored.is_empty(), "{what}: {n:?}");
            n.manifests.into_iter().map(|m| m.key).collect()
        }
        other => panic!("{what}: the loader reads {other:?}, not an S3 notification"),
    }
}

/// The decoded keys of a sample whose records are all raw objects the transform takes.
fn raw_keys(name: &str) -> (S3Event, Vec<String>) {
    let (event, keys) = check_s3_event(name, &read(name));
    for k in &keys {
        assert!(layout::is_raw_object(k), "{name}: {k} is not under raw/");
    }
    (event, keys)
}

/// Checks one sample; returns the manifest keys it names (none for the transform's).
fn check(name: &str, kind: Kind) -> Vec<String> {
    let text = read(name);
    match kind {
        Kind::RawPut => {
            let (event, keys) = raw_keys(name);
            // The sample is there to exercise decoding: its key must need it.
            let raw = event.records[0].s3.object.key.clone().unwrap_or_default();
            assert!(raw.contains('+') && raw.contains('%'), "{name}: {raw}");
            assert_ne!(raw, keys[0], "{name}");
            Vec::new()
        }
        Kind::RawPutLarge => {
            let (event, _) = raw_keys(name);
            let o = &event.records[0].s3.object;
            assert!(
                o.size.is_some_and(|s| s > LARGE_BYTES),
                "{name}: size {:?} must be above {LARGE_BYTES}",
                o.size
            );
            // So large an object is a multipart upload: its eTag says how many parts.
            assert!(
                o.e_tag.as_deref().is_some_and(|t| t.contains('-')),
                "{name}: {:?}",
                o.e_tag
            );
            Vec::new()
        }
        Kind::S3Test => {
            let t: S3TestEvent = typed(name, &text);
            assert_eq!(
                (t.event.as_str(), t.bucket.as_str()),
                ("s3:TestEvent", BUCKET)
            );
            assert_eq!(t.service, "Amazon S3");
            let v: Value = typed(name, &text);
            assert!(
                matches!(parse(&v), Ok(Trigger::Test)),
                "{name}: the loader takes it for {:?}",
                parse(&v)
            );
            Vec::new()
        }
        Kind::ManifestPut => {
            let (_, keys) = check_s3_event(name, &text);
            let manifests = loader_manifests(name, &text);
            assert_eq!(manifests, keys, "{name}: every record is a manifest");
            manifests
        }
        Kind::SqsManifests => check_sqs(name, &text),
        Kind::ManualLoad => {
            let m: ManualLoad = typed(name, &text);
            assert_eq!(m.bucket, BUCKET, "{name}");
            let v: Value = typed(name, &text);
            match parse(&v) {
                Ok(Trigger::Manual(parsed)) => assert_eq!(parsed, m, "{name}"),
                other => panic!("{name}: the loader reads {other:?}"),
            }
            m.manifests
        }
        Kind::KinesisCdc {
            events,
            spills,
            refused,
        } => {
            check_kinesis(name, &text, [events, spills, refused]);
            Vec::new()
        }
        Kind::Schedule => {
            let e: EventBridgeEvent<Value> = typed(name, &text);
            assert_eq!(e.detail_type, "Scheduled Event", "{name}");
            assert_eq!(e.source, "aws.events", "{name}");
            let resources = e.resources.unwrap_or_default();
            assert!(
                !resources.is_empty() && resources.iter().all(|r| r.starts_with("arn:aws:events:")),
                "{name}: {resources:?}"
            );
            Vec::new()
        }
    }
}

/// A `KinesisEvent` of one shard in the shape Lambda's Kinesis poller sends (every record
/// complete, `eventID` = `<shard>:<sequence number>`, sequence numbers rising), whose records'
/// data cdc-sink reads as `counts` = [change events, spill pointers, refused]; the handler's
/// own reading of the event finds every record's position.
fn check_kinesis(name: &str, text: &str, counts: [usize; 3]) {
    let event: KinesisEvent = typed(name, text);
    no_unknown_fields(name, "the event", &event.other);
    assert!(event.records.len() > 1, "{name}: a batch, not one record");
    let mut got = [0; 3];
    let mut previous: Option<SequenceNumber> = None;
    for (i, r) in event.records.iter().enumerate() {
        let what = format!("{name} record {i}");
        no_unknown_fields(&what, "the record", &r.other);
        no_unknown_fields(&what, "kinesis", &r.kinesis.other);
        assert_eq!(r.event_source.as_deref(), Some("aws:kinesis"), "{what}");
        assert_eq!(
            r.event_name.as_deref(),
            Some("aws:kinesis:record"),
            "{what}"
        );
        assert_eq!(r.event_version.as_deref(), Some("1.0"), "{what}");
        assert_eq!(
            r.kinesis.kinesis_schema_version.as_deref(),
            Some("1.0"),
            "{what}"
        );
        assert!(r.aws_region.is_some(), "{what}: awsRegion");
        assert!(
            r.invoke_identity_arn
                .as_deref()
                .is_some_and(|a| a.starts_with("arn:aws:iam::")),
            "{what}: invokeIdentityArn"
        );
        assert!(
            r.event_source_arn
                .as_deref()
                .is_some_and(|a| a.starts_with("arn:aws:kinesis:") && a.contains(":stream/")),
            "{what}: eventSourceARN {:?}",
            r.event_source_arn
        );
        let seq = SequenceNumber::parse(&r.kinesis.sequence_number)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            r.event_id.as_deref(),
            Some(format!("shardId-000000000000:{seq}").as_str()),
            "{what}"
        );
        assert!(
            previous.as_ref().is_none_or(|p| *p < seq),
            "{what}: sequence numbers rise"
        );
        previous = Some(seq);
        match parse_change(bytes::Bytes::from(r.kinesis.data.0.clone())) {
            Ok(Parsed::Event { relation, .. }) => {
                got[0] += 1;
                // docs/CDC.md: the partition key starts with the relation.
                let relation = format!("{}.{}", relation.schema, relation.table);
                assert!(
                    r.kinesis.partition_key.starts_with(&relation),
                    "{what}: partition key {} for {relation}",
                    r.kinesis.partition_key
                );
            }
            Ok(Parsed::Spill { key, .. }) => {
                got[1] += 1;
                assert!(key.starts_with(layout::SPILL_CDC), "{what}: {key}");
            }
            Err(_) => got[2] += 1,
        }
    }
    assert_eq!(got, counts, "{name}: [events, spill pointers, refused]");
    let v: Value = typed(name, text);
    let records = sluice_cdc_sink::event::records(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(records.len(), event.records.len(), "{name}");
}

/// An `SqsEvent` in the shape Lambda's SQS poller sends, each body an S3 notification (or the
/// S3 test event, which S3 also sends through the queue); the loader's parser agrees.
fn check_sqs(name: &str, text: &str) -> Vec<String> {
    let event: SqsEvent = typed(name, text);
    no_unknown_fields(name, "the event", &event.other);
    assert!(event.records.len() > 1, "{name}: a batch, not one message");
    let mut manifests = Vec::new();
    let mut test_events = 0;
    for (i, m) in event.records.iter().enumerate() {
        let what = format!("{name} message {i}");
        no_unknown_fields(&what, "the message", &m.other);
        assert!(m.message_id.is_some(), "{what}: messageId");
        assert!(
            m.receipt_handle.as_deref().is_some_and(|h| h.len() > 100),
            "{what}: receiptHandle"
        );
        assert_eq!(m.event_source.as_deref(), Some("aws:sqs"), "{what}");
        assert!(
            m.event_source_arn
                .as_deref()
                .is_some_and(|a| a.starts_with("arn:aws:sqs:")),
            "{what}: eventSourceARN {:?}",
            m.event_source_arn
        );
        assert!(m.aws_region.is_some(), "{what}: awsRegion");
        assert!(
            m.md5_of_body
                .as_deref()
                .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            "{what}: md5OfBody"
        );
        for a in [
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
        ] {
            assert!(m.attributes.contains_key(a), "{what}: attributes.{a}");
        }
        let body = m.body.as_deref().unwrap_or_else(|| panic!("{what}: body"));
        let v: Value = typed(&what, body);
        if v.get("Event").is_some() {
            let t: S3TestEvent = typed(&what, body);
            assert_eq!(t.event, "s3:TestEvent", "{what}");
            test_events += 1;
        } else {
            let (_, keys) = check_s3_event(&what, body);
            assert_eq!(loader_manifests(&what, body), keys, "{what}");
            manifests.extend(keys);
        }
    }
    assert_eq!(
        test_events, 1,
        "{name}: one s3:TestEvent body among the notifications"
    );

    // The loader's parser: one message each, in order, every body read.
    let v: Value = typed(name, text);
    let Ok(Trigger::Sqs(parsed)) = parse(&v) else {
        panic!("{name}: the loader reads {:?}", parse(&v))
    };
    let ids: Vec<Option<&str>> = parsed.iter().map(|m| Some(m.message_id.as_str())).collect();
    let want: Vec<Option<&str>> = event
        .records
        .iter()
        .map(|m| m.message_id.as_deref())
        .collect();
    assert_eq!(ids, want, "{name}");
    let mut got = Vec::new();
    for m in &parsed {
        let n = m
            .notification
            .as_ref()
            .unwrap_or_else(|e| panic!("{name} message {}: {e}", m.message_id));
        got.extend(n.manifests.iter().map(|r| r.key.clone()));
    }
    assert_eq!(got, manifests, "{name}");
    manifests
}

#[test]
fn every_sample_is_the_event_it_stands_for() {
    let listed: BTreeSet<&str> = SAMPLES.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(listed.len(), SAMPLES.len(), "a sample listed twice");
    let dir = events_dir();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("directory entry");
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    let unknown: Vec<&String> = present
        .iter()
        .filter(|f| !listed.contains(f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{}: files no test knows: {unknown:?} (add them to SAMPLES in {})",
        dir.display(),
        file!()
    );
    let missing: Vec<&&str> = listed.iter().filter(|n| !present.contains(**n)).collect();
    assert!(missing.is_empty(), "listed but not in events/: {missing:?}");

    let mut manifests = std::collections::BTreeMap::new();
    for (name, kind, functions) in SAMPLES {
        assert!(!functions.is_empty(), "{name}: taken by no function");
        for f in *functions {
            assert!(
                Path::new(&workspace_root().join("functions").join(f)).is_dir(),
                "{name}: no function {f}"
            );
        }
        manifests.insert(*name, check(name, *kind));
    }

    // The loader's three samples name the same customers manifests (the invoke tests make
    // them once and load them through each trigger); the SQS batch adds the funnel's.
    let direct = &manifests["s3-manifest.json"];
    assert_eq!(&manifests["load-manual.json"], direct);
    let queued = &manifests["sqs-manifests.json"];
    assert!(direct.iter().all(|k| queued.contains(k)), "{queued:?}");
    assert!(queued.len() > direct.len(), "{queued:?}");
}
