use super::*;

fn example() -> &'static str {
    include_str!("../../../examples/pipeline.toml")
}

#[test]
fn example_pipeline_parses_and_validates() {
    let p = Pipeline::parse(example(), "examples/pipeline.toml").expect("example parses");
    assert_eq!(p.tables.len(), 2);
    let f = p.table("funnel").expect("funnel");
    assert_eq!(f.raw_prefix, "raw/funnel/");
    assert_eq!(f.columns.len(), 9);
    assert_eq!(f.columns[0].ty, ColumnType::Timestamp);
    assert_eq!(f.dedup.as_ref().map(|d| d.key.len()), Some(4));
    let c = p.table("customers").expect("customers");
    assert_eq!(
        c.columns[6].ty,
        ColumnType::Decimal {
            precision: 12,
            scale: 2
        }
    );
    assert!(p.needs_hash_key());
}

#[test]
fn longest_prefix_picks_the_table() {
    let text = example().replace(
        "raw_prefix = \"raw/customers/\"",
        "raw_prefix = \"raw/funnel/vip/\"",
    );
    let p = Pipeline::parse(&text, "t").expect("parses");
    assert_eq!(
        p.table_for_key("raw/funnel/vip/a.jsonl")
            .map(|t| t.name.as_str()),
        Some("customers")
    );
    assert_eq!(
        p.table_for_key("raw/funnel/a.csv").map(|t| t.name.as_str()),
        Some("funnel")
    );
    assert!(p.table_for_key("raw/other/a.csv").is_none());
}

#[test]
fn unknown_key_names_path_and_line() {
    let text = example().replace(
        "required = true\n\n[[tables.columns]]\nname = \"event_type\"",
        "requird = true\n\n[[tables.columns]]\nname = \"event_type\"",
    );
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("typo rejected")
        .to_string();
    assert!(err.contains("p.toml"), "{err}");
    assert!(err.contains("requird"), "{err}");
    assert!(err.contains("tables[0].columns[0]"), "{err}");
    let line = text
        .lines()
        .position(|l| l.contains("requird"))
        .map(|n| n + 1)
        .unwrap_or(0);
    assert!(
        err.contains(&format!("line {line}")),
        "{err} (want line {line})"
    );
}

#[test]
fn bad_type_is_reported_with_path() {
    let text = example().replace("type = \"decimal(12,2)\"", "type = \"decimal(40,2)\"");
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("bad decimal")
        .to_string();
    assert!(err.contains("tables[1].columns[6].type"), "{err}");
    assert!(err.contains("precision"), "{err}");
}

#[test]
fn validation_names_the_field() {
    let cases = [
        (
            "partition_by = \"event_time\"",
            "partition_by = \"nope\"",
            "tables[0].partition_by",
        ),
        (
            "order_by = \"updated_at\"",
            "order_by = \"loyalty_tier\"",
            "tables[1].dedup.order_by",
        ),
        (
            "as_of = \"signup_date\"",
            "as_of = \"missing\"",
            "tables[1].columns[3].pii",
        ),
        (
            "raw_prefix = \"raw/funnel/\"",
            "raw_prefix = \"funnel/\"",
            "tables[0].raw_prefix",
        ),
        ("secret = \"sluice/hash-key\"", "", "hash_key"),
    ];
    for (from, to, path) in cases {
        let text = example().replacen(from, to, 1);
        let err = Pipeline::parse(&text, "p.toml")
            .expect_err(path)
            .to_string();
        assert!(err.contains(path), "{path}: {err}");
    }
}

#[test]
fn snake_case_folds_names() {
    assert_eq!(snake_case("UserID"), "user_id");
    assert_eq!(snake_case("eventTime"), "event_time");
    assert_eq!(snake_case("event-time"), "event_time");
    assert_eq!(snake_case("Geo.Lat"), "geo_lat");
    assert_eq!(snake_case("HTTPStatus"), "http_status");
    assert_eq!(snake_case("1st"), "c_1st");
    assert_eq!(snake_case("already_snake"), "already_snake");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Arbitrary text never panics the parser: it is accepted or rejected with an error.
    #[test]
    fn parser_never_panics(s in "\\PC{0,400}") {
        let _ = Pipeline::parse(&s, "fuzz");
    }

    /// Mutations of the real example never panic either (deeper paths than random text).
    #[test]
    fn mutated_example_never_panics(pos in 0usize..4000, junk in "[\\[\\]{}=\"a-z0-9.,\n ]{0,12}") {
        let text = example();
        let at = text.char_indices().map(|(i, _)| i).nth(pos % text.chars().count()).unwrap_or(0);
        let mut s = text.to_string();
        s.insert_str(at, &junk);
        let _ = Pipeline::parse(&s, "fuzz");
    }
}
