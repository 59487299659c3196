use serde_json::json;

use super::*;
use crate::lake::layout::spill_key;

fn source() -> Source {
    Source {
        db: "shop".into(),
        schema: "public".into(),
        table: "orders".into(),
        lsn: 22817392,
        txid: 7461,
        commit_ts: "2026-11-26T09:00:00.123456Z".into(),
    }
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn update() -> ChangeEvent {
    ChangeEvent {
        op: Op::Update,
        before: Some(map(json!({"id": 7, "name": "old"}))),
        after: Some(map(
            json!({"id": 7, "name": "new", "amount": "12.50", "doc": {"a": 1}, "tags": ["x", "y"]}),
        )),
        unchanged: vec!["big_text".into()],
        source: source(),
    }
}

#[test]
fn serialises_as_the_contract_says() {
    assert_eq!(
        serde_json::to_string(&update()).expect("serialises"),
        r#"{"op":"u","before":{"id":7,"name":"old"},"after":{"amount":"12.50","doc":{"a":1},"id":7,"name":"new","tags":["x","y"]},"unchanged":["big_text"],"source":{"db":"shop","schema":"public","table":"orders","lsn":22817392,"txid":7461,"commit_ts":"2026-11-26T09:00:00.123456Z"}}"#
    );
    let t = ChangeEvent {
        op: Op::Truncate,
        before: None,
        after: None,
        unchanged: vec![],
        source: source(),
    };
    assert_eq!(
        serde_json::to_string(&t).expect("serialises"),
        r#"{"op":"t","before":null,"after":null,"source":{"db":"shop","schema":"public","table":"orders","lsn":22817392,"txid":7461,"commit_ts":"2026-11-26T09:00:00.123456Z"}}"#
    );
    let p = SpillPointer {
        spill: SpillRef {
            key: spill_key("orders", 22817392, 0),
            bytes: 1893201,
        },
        source: source(),
    };
    assert_eq!(
        serde_json::to_string(&p).expect("serialises"),
        r#"{"spill":{"key":"spill/cdc/orders/22817392-0.json","bytes":1893201},"source":{"db":"shop","schema":"public","table":"orders","lsn":22817392,"txid":7461,"commit_ts":"2026-11-26T09:00:00.123456Z"}}"#
    );
}

#[test]
fn stream_records_read_back() {
    let e = update();
    let bytes = serde_json::to_vec(&e).expect("serialises");
    assert_eq!(
        StreamRecord::from_slice(&bytes),
        Ok(StreamRecord::Event(e.clone()))
    );
    let p = SpillPointer {
        spill: SpillRef {
            key: "spill/cdc/orders/1-0.json".into(),
            bytes: 5,
        },
        source: source(),
    };
    let bytes = serde_json::to_vec(&p).expect("serialises");
    let r = StreamRecord::from_slice(&bytes).expect("a pointer");
    assert_eq!(r.source(), &p.source);
    assert_eq!(r, StreamRecord::Spill(p));
    // `unchanged` may be absent (empty).
    let c = br#"{"op":"c","before":null,"after":{"id":1},"source":{"db":"d","schema":"s","table":"t","lsn":1,"txid":2,"commit_ts":"2026-01-01T00:00:00.000000Z"}}"#;
    assert!(matches!(
        StreamRecord::from_slice(c),
        Ok(StreamRecord::Event(ChangeEvent { op: Op::Insert, .. }))
    ));
}

#[test]
fn invalid_records_are_clear_errors() {
    let src = r#""source":{"db":"d","schema":"s","table":"t","lsn":1,"txid":2,"commit_ts":"2026-01-01T00:00:00.000000Z"}"#;
    let cases = [
        ("not json".to_string(), "expected"),
        ("[1]".to_string(), "JSON, but not an object"),
        (" \n".to_string(), "the record is empty"),
        ("\"secret\"".to_string(), "JSON, but not an object"),
        (format!(r#"{{"op":"x","before":null,"after":null,{src}}}"#), "at op: unknown variant"),
        (format!(r#"{{"op":"c","before":null,"after":{{}},"extra":1,{src}}}"#), "unknown field `extra`"),
        (format!(r#"{{"op":"c","before":null,"after":"secret",{src}}}"#), "at after: invalid type: string \"…\""),
        (format!(r#"{{"op":"c","after":{{}},{src}}}"#), "missing field `before`"),
        (format!(r#"{{"op":"d","before":null,"after":null,{src}}}"#), "op \"d\" does not allow before null and after null"),
        (format!(r#"{{"op":"c","before":{{}},"after":{{}},{src}}}"#), "does not allow before set"),
        (format!(r#"{{"op":"u","before":null,"after":{{"big":1}},"unchanged":["big"],{src}}}"#), "listed as unchanged but present"),
        (format!(r#"{{"op":"t","before":null,"after":null,"unchanged":["x"],{src}}}"#), "cannot list unchanged"),
        (r#"{"op":"c","before":null,"after":{},"source":{"db":"d","schema":"s","table":"t","lsn":-1,"txid":2,"commit_ts":"2026-01-01T00:00:00.000000Z"}}"#.to_string(), "at source.lsn: invalid value"),
        (r#"{"op":"c","before":null,"after":{},"source":{"db":"d","schema":"s","table":"t","lsn":1,"txid":2,"commit_ts":"2026-01-01 00:00:00"}}"#.to_string(), "commit_ts"),
        (format!(r#"{{"spill":{{"key":"raw/other.json","bytes":1}},{src}}}"#), "spill.key must be a key under spill/cdc/"),
        (format!(r#"{{"spill":{{"key":"spill/cdc/../x","bytes":1}},{src}}}"#), "spill.key"),
        (format!(r#"{{"spill":{{"key":"spill/cdc/t/1.json","bytes":1}},"op":"c",{src}}}"#), "unknown field `op`"),
        (format!(r#"{{"op":"c","before":null,"after":{{}},{src}}} x"#), "trailing"),
    ];
    for (input, want) in cases {
        let err = StreamRecord::from_slice(input.as_bytes()).expect_err(&input);
        let msg = err.to_string();
        assert!(msg.contains(want), "{input}\n  gave: {msg}\n  want: {want}");
        assert!(!msg.contains("secret"), "{msg}");
    }
}

#[test]
fn partition_keys() {
    let key = |cols: &[&str]| -> Vec<String> { cols.iter().map(|c| c.to_string()).collect() };
    let e = update();
    assert_eq!(e.partition_key(&key(&["id"])), "public.orders/7");
    assert_eq!(
        e.partition_key(&key(&["id", "name"])),
        "public.orders/7/\"new\""
    );
    assert_eq!(e.partition_key(&key(&["missing"])), "public.orders/null");
    let d = ChangeEvent {
        op: Op::Delete,
        before: Some(map(json!({"id": 9}))),
        after: None,
        unchanged: vec![],
        source: source(),
    };
    assert_eq!(d.partition_key(&key(&["id"])), "public.orders/9");
    let t = ChangeEvent {
        op: Op::Truncate,
        before: None,
        after: None,
        unchanged: vec![],
        source: source(),
    };
    assert_eq!(t.partition_key(&key(&["id"])), "public.orders");
    // Over 256 bytes: the SHA-256 of the whole key, in hex.
    let mut long = update();
    let name = "n".repeat(300);
    long.after = Some(map(json!({"id": 7, "name": name})));
    let full = format!("public.orders/\"{name}\"");
    assert_eq!(
        long.partition_key(&key(&["name"])),
        hex::encode(Sha256::digest(full.as_bytes()))
    );
    assert_eq!(long.partition_key(&key(&["name"])).len(), 64);
    // 256 bytes exactly is kept.
    let fits = "n".repeat(256 - "public.orders/\"\"".len());
    long.after = Some(map(json!({"name": fits})));
    assert_eq!(long.partition_key(&key(&["name"])).len(), 256);
}

#[test]
fn iso_utc_micros() {
    assert!(is_iso_utc_micros("2026-11-26T09:00:00.123456Z"));
    assert!(is_iso_utc_micros("12026-11-26T09:00:00.000000Z"));
    for bad in [
        "2026-11-26T09:00:00Z",
        "2026-11-26 09:00:00.123456Z",
        "2026-11-26T09:00:00.123456",
        "infinity",
    ] {
        assert!(!is_iso_utc_micros(bad), "{bad}");
    }
}
