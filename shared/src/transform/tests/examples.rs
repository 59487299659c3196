//! The tables of `examples/pipeline.toml`: customers (JSON lines) and funnel (CSV).

use super::*;

const CUSTOMERS: &str = include_str!("../../../../examples/pipeline.toml");

#[tokio::test]
async fn jsonl_flattens_json_generalises_dates_and_drops_pii() {
    // Same rows, same quarantine, whatever the batch size.
    for batch in [1, 7, 8192] {
        jsonl_case(batch).await;
    }
}

async fn jsonl_case(batch: usize) {
    let l = lake();
    let t = transformer(&CUSTOMERS.replace(
        "raw_prefix = \"raw/customers/\"",
        &format!("raw_prefix = \"raw/customers/\"\noutput = {{ batch_rows = {batch} }}"),
    ));
    assert_eq!(
        t.pipeline().table("customers").map(|c| c.output.batch_rows),
        Some(batch)
    );
    let body = concat!(
        r#"{"customer_id":1,"full_name":"Ann","email":"ann@x.org","date_of_birth":"1990-06-15","signup_date":"2020-06-14T09:00:00Z","loyalty_tier":"gold","lifetime_spend":"1234.50","address":{"street":"1 Main St","city":"Leeds","postcode":"LS1","geo":{"lat":53.8,"lon":-1.55},"tags":["a","b"]},"updated_at":"2024-01-01T00:00:00Z"}"#,
        "\n",
        r#"{"customer_id":2,"full_name":"Bob","email":null,"date_of_birth":"NULL","signup_date":1600000000,"loyalty_tier":"","lifetime_spend":7,"address":"{\"city\":\"York\"}","updated_at":"2024-01-01T00:00:00Z"}"#,
        "\n",
        r#"{"customer_id":1,"full_name":"Ann","email":"ann@x.org","date_of_birth":"1990-06-15","signup_date":"2020-06-14T09:00:00Z","loyalty_tier":"platinum","lifetime_spend":"99.99","address":null,"updated_at":"2024-02-01T00:00:00Z"}"#,
        "\n",
        r#"{"customer_id":3, "address": "{not json}", "signup_date":"2020-01-01","updated_at":"2024-01-01"}"#,
        "\n",
        r#"[1,2,3]"#,
        "\n",
        r#"{"customer_id":4,"signup_date":"2020-01-01","updated_at":"2024-01-01","lifetime_spend":"NaN"}"#,
        "\n",
    );
    put(&l, "raw/customers/2024/c.jsonl", body.as_bytes()).await;
    let s = t
        .transform_object(&l.store, &l.catalog, "raw/customers/2024/c.jsonl", None)
        .await
        .expect("transform");
    assert_eq!(
        s.counts,
        Counts {
            rows_read: 6,
            rows_written: 2,
            rows_duplicate: 1,
            rows_quarantined: 3
        }
    );
    let got = rows(&l, "customers").await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1],
        "customer_id=2|email_hash=∅|date_of_birth_age_band=∅|signup_date=2020-09-13T12:26:40Z|loyalty_tier=∅|lifetime_spend=7.00|address_city=York|address_postcode=∅|address_geo_lat=∅|address_geo_lon=∅|address_tags=∅|updated_at=2024-01-01T00:00:00Z"
    );
    assert!(
        got[0].starts_with("customer_id=1|email_hash="),
        "{}",
        got[0]
    );
    assert!(
        got[0].ends_with("|date_of_birth_age_band=20-29|signup_date=2020-06-14T09:00:00Z|loyalty_tier=platinum|lifetime_spend=99.99|address_city=∅|address_postcode=∅|address_geo_lat=∅|address_geo_lon=∅|address_tags=∅|updated_at=2024-02-01T00:00:00Z"),
        "{}",
        got[0]
    );
    assert!(!got
        .iter()
        .any(|r| r.contains("full_name") || r.contains("street") || r.contains("Ann")));
    let q = quarantine(&l, &s).await;
    let reasons: Vec<String> = q
        .iter()
        .map(|r| format!("{}:{}:{}", r["line"], r["column"], r["reason"]))
        .collect();
    assert!(
        reasons[0].starts_with("4:\"address\":\"bad JSON"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("5:null:\"expected a JSON object"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("6:\"lifetime_spend\":")
            && reasons[2].contains("cannot be stored in a decimal"),
        "{reasons:?}"
    );
}

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
