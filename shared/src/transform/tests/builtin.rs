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
