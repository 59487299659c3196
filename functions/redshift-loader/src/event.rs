//! The loader's three triggers, read from the invocation's JSON: an SQS batch of S3
//! notifications, an S3 notification, or a manual payload. Only shapes and keys here; what to
//! load and how failures are reported is the handler's.

use serde::Deserialize;
use serde_json::Value;

use sluice::events::decode_s3_key;
use sluice::lake::layout;
use sluice::lambda::HandlerError;

/// A manifest an event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    pub bucket: String,
    pub table: String,
    /// The decoded key, `manifests/<table>/<hash>.json`.
    pub key: String,
}

/// What one S3 notification holds for the loader.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notification {
    pub manifests: Vec<ManifestRef>,
    /// Records that are not ours (another event type, a key outside `manifests/`): `s3://b/k`.
    pub ignored: Vec<String>,
    /// Records that cannot be read (no bucket or key, a key that does not decode).
    pub errors: Vec<String>,
}

/// One SQS message of the batch.
#[derive(Debug, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    /// The S3 notification in its body, or why the body is not one.
    pub notification: Result<Notification, String>,
}

/// The payload of a backfill or a DLQ replay: manifests of one table, named by key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualLoad {
    /// The lake bucket.
    pub bucket: String,
    /// The table; every key must be one of its manifests.
    pub table: String,
    /// Manifest keys (`manifests/<table>/<hash>.json`), as stored (not URL-encoded).
    pub manifests: Vec<String>,
}

/// What invoked the function.
#[derive(Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The `s3:TestEvent` S3 sends when a notification is set up.
    Test,
    Sqs(Vec<SqsMessage>),
    S3(Notification),
    Manual(ManualLoad),
}

/// Reads the invocation's payload. An SQS message that is not an S3 notification is kept (with
/// the reason) so the handler can report that message alone; anything the function cannot take
/// as a whole is `BadInput`.
pub fn parse(event: &Value) -> Result<Trigger, HandlerError> {
    if is_test_event(event) {
        return Ok(Trigger::Test);
    }
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        let sqs = records
            .iter()
            .filter(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
            .count();
        if sqs > 0 && sqs < records.len() {
            return Err(HandlerError::bad_input(
                "event mixes SQS records with others: not an SQS batch",
            ));
        }
        if sqs > 0 {
            return records
                .iter()
                .map(sqs_message)
                .collect::<Result<_, _>>()
                .map(Trigger::Sqs);
        }
        return notification(event)
            .map(Trigger::S3)
            .map_err(HandlerError::bad_input);
    }
    if event.get("manifests").is_some() {
        let m: ManualLoad = serde_json::from_value(event.clone()).map_err(|e| {
            HandlerError::bad_input(format!(
                "manual payload: {e} (expected {{\"bucket\": \"…\", \"table\": \"…\", \"manifests\": [\"{}<table>/<hash>.json\", …]}})",
                layout::MANIFESTS
            ))
        })?;
        check_manual(&m)?;
        return Ok(Trigger::Manual(m));
    }
    Err(HandlerError::bad_input(
        "not an SQS batch, an S3 notification or a manual payload (bucket, table, manifests)",
    ))
}

fn is_test_event(v: &Value) -> bool {
    v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent")
}

fn sqs_message(record: &Value) -> Result<SqsMessage, HandlerError> {
    // Without its id a message cannot be reported back: the batch itself is malformed.
    let message_id = record
        .get("messageId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| HandlerError::bad_input("an SQS record has no messageId"))?
        .to_string();
    let notification = match record.get("body").and_then(Value::as_str) {
        None => Err("the message has no body".to_string()),
        Some(body) => match serde_json::from_str::<Value>(body) {
            Err(e) => Err(format!("the body is not JSON: {e}")),
            Ok(v) if is_test_event(&v) => Ok(Notification::default()),
            Ok(v) => notification(&v),
        },
    };
    Ok(SqsMessage {
        message_id,
        notification,
    })
}

/// The manifests of an S3 notification (`{"Records": [...]}`).
fn notification(v: &Value) -> Result<Notification, String> {
    let records = v
        .get("Records")
        .and_then(Value::as_array)
        .ok_or("no Records array: not an S3 notification")?;
    let mut n = Notification::default();
    for (i, r) in records.iter().enumerate() {
        let bucket = r.pointer("/s3/bucket/name").and_then(Value::as_str);
        let raw_key = r.pointer("/s3/object/key").and_then(Value::as_str);
        let (Some(bucket), Some(raw_key)) = (bucket, raw_key) else {
            n.errors.push(format!(
                "record {i}: missing s3.bucket.name or s3.object.key"
            ));
            continue;
        };
        let key = match decode_s3_key(raw_key) {
            Ok(k) => k,
            Err(e) => {
                n.errors.push(format!("record {i}: {e}"));
                continue;
            }
        };
        let event_name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
        if !event_name.is_empty() && !event_name.starts_with("ObjectCreated") {
            tracing::info!(
                bucket,
                key,
                event_name,
                "not an ObjectCreated event; ignored"
            );
            n.ignored.push(format!("s3://{bucket}/{key}"));
            continue;
        }
        match layout::manifest_table(&key) {
            Some(table) => n.manifests.push(ManifestRef {
                bucket: bucket.to_string(),
                table: table.to_string(),
                key: key.clone(),
            }),
            None => {
                tracing::info!(
                    bucket,
                    key,
                    "not a manifest (manifests/<table>/<hash>.json); ignored"
                );
                n.ignored.push(format!("s3://{bucket}/{key}"));
            }
        }
    }
    Ok(n)
}

fn check_manual(m: &ManualLoad) -> Result<(), HandlerError> {
    if m.bucket.is_empty() || m.table.is_empty() {
        return Err(HandlerError::bad_input(
            "manual payload: bucket and table must not be empty",
        ));
    }
    if m.manifests.is_empty() {
        return Err(HandlerError::bad_input(format!(
            "manual payload: no manifests listed for table {} (`sluice load --table {}` loads them all)",
            m.table, m.table
        )));
    }
    let wrong: Vec<&str> = m
        .manifests
        .iter()
        .filter(|k| layout::manifest_table(k) != Some(m.table.as_str()))
        .map(String::as_str)
        .collect();
    if !wrong.is_empty() {
        return Err(HandlerError::bad_input(format!(
            "manual payload: not manifests of table {} ({}): {}",
            m.table,
            layout::manifests_prefix(&m.table),
            wrong.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::lambda::ErrorKind;

    fn s3_event(records: &[(&str, &str, &str)]) -> Value {
        let records: Vec<Value> = records
            .iter()
            .map(|(name, bucket, key)| {
                serde_json::json!({
                    "eventSource": "aws:s3",
                    "eventName": name,
                    "s3": { "bucket": { "name": bucket }, "object": { "key": key } }
                })
            })
            .collect();
        serde_json::json!({ "Records": records })
    }

    fn sqs(messages: &[(&str, String)]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|(id, body)| serde_json::json!({ "messageId": id, "eventSource": "aws:sqs", "body": body }))
            .collect();
        serde_json::json!({ "Records": records })
    }

    fn manifest(bucket: &str, table: &str, key: &str) -> ManifestRef {
        ManifestRef {
            bucket: bucket.into(),
            table: table.into(),
            key: key.into(),
        }
    }

    #[test]
    fn s3_records_give_manifests_and_ignore_other_keys() {
        let v = s3_event(&[
            ("ObjectCreated:Put", "b", "manifests/funnel/ab.json"),
            ("ObjectCreated:Put", "b", "manifests/my+table/c%2Ed.json"),
            ("ObjectRemoved:Delete", "b", "manifests/funnel/gone.json"),
            ("ObjectCreated:Put", "b", "raw/funnel/x.csv"),
            ("ObjectCreated:Put", "b", "manifests/%FF.json"),
        ]);
        let Ok(Trigger::S3(n)) = parse(&v) else {
            panic!("an S3 notification")
        };
        assert_eq!(
            n.manifests,
            vec![
                manifest("b", "funnel", "manifests/funnel/ab.json"),
                manifest("b", "my table", "manifests/my table/c.d.json"),
            ]
        );
        assert_eq!(
            n.ignored,
            vec![
                "s3://b/manifests/funnel/gone.json".to_string(),
                "s3://b/raw/funnel/x.csv".to_string()
            ]
        );
        assert_eq!(n.errors.len(), 1, "{n:?}");
        assert!(n.errors[0].starts_with("record 4:"), "{n:?}");
    }

    #[test]
    fn sqs_bodies_are_read_one_by_one() {
        let good = s3_event(&[("ObjectCreated:Put", "b", "manifests/t/1.json")]).to_string();
        let test = serde_json::json!({ "Event": "s3:TestEvent", "Bucket": "b" }).to_string();
        let v = sqs(&[
            ("m1", good),
            ("m2", test),
            ("m3", "not json".into()),
            ("m4", "{\"hello\": 1}".into()),
        ]);
        let Ok(Trigger::Sqs(msgs)) = parse(&v) else {
            panic!("an SQS batch")
        };
        let ids: Vec<&str> = msgs.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2", "m3", "m4"]);
        assert_eq!(
            msgs[0].notification.as_ref().map(|n| n.manifests.clone()),
            Ok(vec![manifest("b", "t", "manifests/t/1.json")])
        );
        assert_eq!(msgs[1].notification, Ok(Notification::default()));
        assert!(msgs[2]
            .notification
            .as_ref()
            .is_err_and(|e| e.contains("not JSON")));
        assert!(msgs[3]
            .notification
            .as_ref()
            .is_err_and(|e| e.contains("no Records")));
        // A record without its id cannot be reported: the whole batch is bad input.
        let e =
            parse(&serde_json::json!({ "Records": [{ "eventSource": "aws:sqs", "body": "{}" }] }))
                .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }

    #[test]
    fn manual_payloads_name_manifests_of_their_table() {
        let ok =
            serde_json::json!({ "bucket": "b", "table": "t", "manifests": ["manifests/t/1.json"] });
        assert_eq!(
            parse(&ok),
            Ok(Trigger::Manual(ManualLoad {
                bucket: "b".into(),
                table: "t".into(),
                manifests: vec!["manifests/t/1.json".into()],
            }))
        );
        for (bad, says) in [
            (
                serde_json::json!({ "bucket": "b", "table": "t", "manifests": ["manifests/u/1.json", "raw/t/x"] }),
                "manifests/u/1.json, raw/t/x",
            ),
            (
                serde_json::json!({ "bucket": "b", "table": "t", "manifests": [] }),
                "no manifests listed",
            ),
            (
                serde_json::json!({ "bucket": "b", "manifests": ["manifests/t/1.json"] }),
                "missing field `table`",
            ),
            (
                serde_json::json!({ "bucket": "b", "table": "t", "manifests": [], "extra": 1 }),
                "unknown field `extra`",
            ),
        ] {
            let e = parse(&bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadInput);
            assert!(e.message.contains(says), "{e}");
        }
    }

    #[test]
    fn test_events_and_strangers() {
        let test = serde_json::json!({ "Service": "Amazon S3", "Event": "s3:TestEvent" });
        assert_eq!(parse(&test), Ok(Trigger::Test));
        let e = parse(&serde_json::json!({ "hello": "world" })).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        let mixed = serde_json::json!({ "Records": [
            { "eventSource": "aws:sqs", "messageId": "m", "body": "{}" },
            { "eventSource": "aws:s3" }
        ] });
        assert!(parse(&mixed).is_err());
    }
}
