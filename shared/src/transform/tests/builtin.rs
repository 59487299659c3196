//! Built-in columns (`_op`, `_lsn`, …) through the engine.

use super::*;

const CHANGES: &str = r#"
[[tables]]
name = "changes"
raw_prefix = "raw/changes/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = { key = ["id"], order_by = "_lsn" }
catalog = { database = "test_db" }
columns = [
  { name = "id", type = "int", required = true },
  { name = "name", type = "string" },
  { name = "_op", type = "string" },
  { name = "_lsn", type = "int" },
  { name = "_commit_ts", type = "timestamp" },
]
"#;

#[tokio::test]
async fn built_in_columns_are_read_from_their_json_fields_and_keep_their_names() {
    let l = lake();
    // `op` and `lsn` are decoys: a built-in is read from the field of its own name only.
    let body = concat!(
        r#"{"id":1,"name":"a","_op":"insert","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
        "\n",
        r#"{"id":1,"name":"b","_op":"update","_lsn":12,"_commit_ts":"2024-03-01T10:05:00Z","op":"x","lsn":1}"#,
        "\n",
        r#"{"id":2,"name":"c","_op":"insert","_lsn":11,"_commit_ts":"2024-03-02T00:00:00Z"}"#,
        "\n",
        r#"{"id":2,"_op":"delete","_lsn":13,"_commit_ts":"2024-03-03T00:00:00Z"}"#,
        "\n",
    );
    put(&l, "raw/changes/c.jsonl", body.as_bytes()).await;
    let s = transformer(CHANGES)
        .transform_object(&l.store, &l.catalog, "raw/changes/c.jsonl", None)
        .await
        .expect("transform");
    assert_eq!(
        s.counts,
        Counts {
            rows_read: 4,
            rows_written: 2,
            rows_duplicate: 2,
            rows_quarantined: 0
        }
    );
    assert_eq!(
        rows(&l, "changes").await,
        vec![
            "id=1|name=b|_op=update|_lsn=12|_commit_ts=2024-03-01T10:05:00Z",
            "id=2|name=∅|_op=delete|_lsn=13|_commit_ts=2024-03-03T00:00:00Z",
        ]
    );
    let t = l
        .catalog
        .get_table("test_db", "changes")
        .await
        .expect("cat")
        .expect("table");
    let cols: Vec<(&str, &str)> = t
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.glue_type.as_str()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("id", "bigint"),
            ("name", "string"),
            ("_op", "string"),
            ("_lsn", "bigint"),
            ("_commit_ts", "timestamp")
        ]
    );
}

#[tokio::test]
async fn a_csv_header_names_a_built_in_column_exactly() {
    let l = lake();
    let t = transformer(&CHANGES.replace("format = \"jsonl\"", "format = \"csv\""));
    // `ID` finds `id` by its snake_case form; `Op` does not find `_op`.
    put(
        &l,
        "raw/changes/c.csv",
        b"ID,name,Op,_lsn,_commit_ts\n1,a,update,5,2024-03-01 10:00:00\n",
    )
    .await;
    let s = t
        .transform_object(&l.store, &l.catalog, "raw/changes/c.csv", None)
        .await
        .expect("transform");
    assert_eq!(s.missing_columns, vec!["_op".to_string()]);
    assert_eq!(s.unknown_columns, vec!["Op".to_string()]);
    assert_eq!(
        rows(&l, "changes").await,
        vec!["id=1|name=a|_op=∅|_lsn=5|_commit_ts=2024-03-01T10:00:00Z"]
    );
}

#[tokio::test]
async fn a_user_column_never_reads_a_reserved_field() {
    let l = lake();
    // A user column `lsn` and no `_lsn`: the header's `_lsn` is not its field.
    let text = CHANGES
        .replace("format = \"jsonl\"", "format = \"csv\"")
        .replace("order_by = \"_lsn\"", "order_by = \"_commit_ts\"")
        .replace(
            "{ name = \"_lsn\", type = \"int\" },",
            "{ name = \"lsn\", type = \"int\" },",
        );
    put(
        &l,
        "raw/changes/u.csv",
        b"id,name,_op,_lsn,_commit_ts\n1,a,c,5,2024-03-01 10:00:00\n",
    )
    .await;
    let s = transformer(&text)
        .transform_object(&l.store, &l.catalog, "raw/changes/u.csv", None)
        .await
        .expect("transform");
    assert_eq!(s.missing_columns, vec!["lsn".to_string()]);
    assert_eq!(s.unknown_columns, vec!["_lsn".to_string()]);
    assert_eq!(
        rows(&l, "changes").await,
        vec!["id=1|name=a|_op=c|lsn=∅|_commit_ts=2024-03-01T10:00:00Z"]
    );
}

#[tokio::test]
async fn a_renamed_underscore_field_is_read_by_its_exact_name() {
    let l = lake();
    let text = CHANGES
        .replace("format = \"jsonl\"", "format = \"csv\"")
        .replace(
            "{ name = \"name\", type = \"string\" },",
            "{ name = \"_id\", type = \"string\", rename = \"mongo_id\" },",
        );
    put(
        &l,
        "raw/changes/m.csv",
        b"id,_id,_op,_lsn,_commit_ts\n1,65a1f0,c,5,2024-03-01 10:00:00\n",
    )
    .await;
    let s = transformer(&text)
        .transform_object(&l.store, &l.catalog, "raw/changes/m.csv", None)
        .await
        .expect("transform");
    assert!(s.missing_columns.is_empty(), "{:?}", s.missing_columns);
    assert_eq!(
        rows(&l, "changes").await,
        vec!["id=1|mongo_id=65a1f0|_op=c|_lsn=5|_commit_ts=2024-03-01T10:00:00Z"]
    );
}
