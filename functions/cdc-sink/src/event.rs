//! The Kinesis event, read record by record: each record's position (shard from `eventID`,
//! `kinesis.sequenceNumber`, `eventSourceARN`) and its data, decoded from base64 by
//! `aws_lambda_events`' own record type.
//!
//! The event arrives as JSON, not as a `KinesisEvent`: one record whose data is not base64
//! would make the whole typed event fail, and so fail the invocation for every record; read one
//! record at a time, it is refused alone (quarantined) and the others are written. A record
//! without a usable position is another matter: it cannot be named or resumed from, Kinesis
//! never sends one, so the event is not a Kinesis batch and the invocation fails (`BadInput`).

use aws_lambda_events::event::kinesis::KinesisEventRecord;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use sluice::cdc::sink::{Position, PositionError, RecordData, SequenceNumber, ShardId, SinkRecord};

/// Why an event is not a Kinesis batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    #[error("not a Kinesis event: {reason}")]
    NotKinesis { reason: String },
    #[error("record {index}: {reason}")]
    NoPosition { index: usize, reason: String },
    #[error("record {index}: {source}")]
    BadPosition {
        index: usize,
        #[source]
        source: PositionError,
    },
}

/// The records of a Kinesis event, in the event's order.
pub fn records(event: &Value) -> Result<Vec<SinkRecord>, EventError> {
    let list = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| EventError::NotKinesis {
            reason: "no `Records` list".into(),
        })?;
    list.iter()
        .enumerate()
        .map(|(index, record)| {
            Ok(SinkRecord {
                index,
                position: position(index, record)?,
                data: data(record),
            })
        })
        .collect()
}

fn text<'a>(v: Option<&'a Value>, index: usize, what: &str) -> Result<&'a str, EventError> {
    v.and_then(Value::as_str)
        .ok_or_else(|| EventError::NoPosition {
            index,
            reason: format!("no {what}"),
        })
}

fn position(index: usize, record: &Value) -> Result<Position, EventError> {
    let event_id = text(record.get("eventID"), index, "eventID")?;
    let (shard, id_sequence) = event_id
        .split_once(':')
        .ok_or_else(|| EventError::NoPosition {
            index,
            reason: format!("eventID {event_id:?} is not <shard id>:<sequence number>"),
        })?;
    let sequence = match record.pointer("/kinesis/sequenceNumber") {
        Some(v) => text(Some(v), index, "kinesis.sequenceNumber")?,
        None => id_sequence,
    };
    let bad = |source| EventError::BadPosition { index, source };
    Ok(Position {
        source: record
            .get("eventSourceARN")
            .and_then(Value::as_str)
            .unwrap_or("unknown-stream")
            .to_string(),
        shard: ShardId::parse(shard).map_err(bad)?,
        sequence: SequenceNumber::parse(sequence).map_err(bad)?,
    })
}

fn data(record: &Value) -> RecordData {
    match KinesisEventRecord::deserialize(record) {
        Ok(r) => RecordData::Decoded(Bytes::from(r.kinesis.data.0)),
        Err(e) => RecordData::Unreadable {
            raw: record
                .pointer("/kinesis/data")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            reason: e.to_string(),
        },
    }
}
