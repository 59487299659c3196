//! The tables of `examples/pipeline.toml`: customers (JSON lines) and funnel (CSV).

use super::*;

const CUSTOMERS: &str = include_str!("../../../../examples/pipeline.toml");

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Arbitrary bytes through the whole engine (CSV and JSON lines): never a panic, and every
    /// row read is accounted for.
    #[test]
    fn engine_never_panics_and_counts_balance(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
        lines in proptest::collection::vec("[0-9a-z,\"{}:\\[\\] .\\-\n]{0,40}", 0..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let l = lake();
            let t = transformer(CUSTOMERS);
            let mut csv = b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n".to_vec();
            csv.extend_from_slice(&body);
            csv.extend_from_slice(lines.join("\n").as_bytes());
            put(&l, "raw/funnel/f.csv", &csv).await;
            let mut jsonl = body.clone();
            jsonl.extend_from_slice(lines.join("\n").as_bytes());
            put(&l, "raw/customers/c.jsonl", &jsonl).await;
            for key in ["raw/funnel/f.csv", "raw/customers/c.jsonl"] {
                match t.transform_object(&l.store, &l.catalog, key, None).await {
                    Ok(s) => balanced(&s.counts),
                    Err(e) => assert_eq!(e.kind(), ErrorKind::BadInput, "{e}"),
                }
            }
        });
    }
}

#[tokio::test]
async fn missing_dedup_key_column_fails_the_object_without_leaking_values() {
    let l = lake();
    let t = transformer(CUSTOMERS);
    // The funnel header without user_session (a dedup key column): distinct rows would collapse.
    put(&l, "raw/funnel/h.csv", b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id\n2019-10-01 00:00:00 UTC,view,1,2,,,1.0,secret-user-42\n").await;
    let err = t
        .transform_object(&l.store, &l.catalog, "raw/funnel/h.csv", None)
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("user_session") && msg.contains("8 header fields"),
        "{msg}"
    );
    // A headerless file: its first row must not end up in the (logged) error message.
    put(
        &l,
        "raw/funnel/noheader.csv",
        b"2019-10-01 00:00:00 UTC,view,1,2,,,1.0,secret-user-42,sess\n",
    )
    .await;
    let msg = t
        .transform_object(&l.store, &l.catalog, "raw/funnel/noheader.csv", None)
        .await
        .expect_err("refused")
        .to_string();
    assert!(!msg.contains("secret-user-42"), "{msg}");
}
