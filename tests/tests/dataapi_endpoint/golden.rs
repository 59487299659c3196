//! Every statement of the loader's golden Redshift SQL on the test endpoint.

use super::*;

/// Every statement of the loader's golden Redshift SQL runs, with COPY manifests of matching
/// Parquet files, and the load's outcome is right.
#[tokio::test]
async fn the_golden_redshift_sql_runs() {
    let e = env().await;
    let bucket = unique_name("dapi-golden");
    let s3 = moto_bucket(&e.sdk, &bucket).await;
    let dir = workspace_root().join("shared/src/warehouse/golden");
    let ts = || {
        Arc::new(arrow::array::TimestampMicrosecondArray::from(
            vec![1_700_000_000_000_000i64; 3],
        )) as ArrayRef
    };

    // customers: one COPY into the temp stage, 12 columns.
    let lake = unique_name("gold");
    let s = |v: [&str; 3]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let f = |v: [f64; 3]| Arc::new(Float64Array::from(v.to_vec())) as ArrayRef;
    let customers = parquet(vec![
        (
            "customer_id",
            Arc::new(Int64Array::from(vec![Some(1), Some(1), None])) as ArrayRef,
        ),
        ("email_hash", s(["h1", "h1b", "h3"])),
        ("band", s(["20-29", "20-29", "30-39"])),
        ("signup_date", ts()),
        ("tier", s(["gold", "gold", "x"])),
        ("spend", f([1.25, 2.5, 3.0])),
        ("city", s(["A", "B", "C"])),
        ("postcode", s(["1", "2", "3"])),
        ("lat", f([1.0, 2.0, 3.0])),
        ("lon", f([1.0, 2.0, 3.0])),
        ("tags", s(["[]", "[]", "[]"])),
        (
            "updated_at",
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
                1_700_000_000_000_000i64,
                1_700_000_001_000_000,
                1_700_000_000_000_000,
            ])) as ArrayRef,
        ),
    ]);
    let m0 = manifest(&s3, &bucket, "customers", &[("c.parquet", Some(customers))]).await;
    let text = std::fs::read_to_string(dir.join("customers.redshift.sql")).expect("golden");
    let text = text
        .replace("\"lake\"", &format!("\"{lake}\""))
        .replace("s3://lake/loads/t/b/copy-0.manifest", &m0);
    let sections = golden_sections(&text);
    for (name, sqls) in &sections {
        let d = run_batch(&e.client, sqls).await;
        assert_eq!(
            d.status(),
            Some(&StatusString::Finished),
            "customers {name}: {:?}",
            d.error()
        );
    }
    let got = pg_scalar(&format!(
        "SELECT string_agg(customer_id || ':' || email_hash, ',') FROM \"{lake}\".customers"
    ))
    .await;
    assert_eq!(
        got.as_deref(),
        Some("1:h1b"),
        "dedup kept the latest row, dropped the NULL key"
    );

    // orders: a persistent stage (7 columns), a column group (6 columns), tombstones, and
    // unchanged-TOAST markers: resolved in the batch (1 from 10, 3 from 13), or not (5).
    let (mart, stg) = (unique_name("gold"), unique_name("gold"));
    let i = |v: &[i64]| Arc::new(Int64Array::from(v.to_vec())) as ArrayRef;
    let o = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let ts = |n: usize| {
        Arc::new(arrow::array::TimestampMicrosecondArray::from(
            vec![1_700_000_000_000_000i64; n],
        )) as ArrayRef
    };
    // Position matters: "amount" is dropped below and added back by the load's ALTER, which
    // puts it last (as Redshift's ADD COLUMN does); the file has it where the table's output
    // columns have it (third), so the plan COPYs it through a stage of the file's shape.
    let both = Some("note,amount");
    let full = parquet(vec![
        ("order", i(&[1, 2, 2, 5, 1])),
        ("note", o(&[Some("a"), Some("b"), Some("b2"), None, None])),
        (
            "amount",
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                Some(2.5),
                Some(2.5),
                None,
                None,
            ])) as ArrayRef,
        ),
        (
            "_op",
            o(&[Some("c"), Some("c"), Some("u"), Some("u"), Some("u")]),
        ),
        ("_lsn", i(&[10, 11, 12, 16, 17])),
        ("_commit_ts", ts(5)),
        ("_unchanged", o(&[None, None, None, both, both])),
    ]);
    let group = parquet(vec![
        ("order", i(&[3, 2, 4, 3])),
        ("note", o(&[Some("c"), Some("gone"), Some("d"), None])),
        ("_op", o(&[Some("c"), Some("d"), Some("c"), Some("u")])),
        ("_lsn", i(&[13, 14, 15, 18])),
        ("_commit_ts", ts(4)),
        ("_unchanged", o(&[None, None, None, Some("note")])),
    ]);
    let m0 = manifest(&s3, &bucket, "orders0", &[("o.parquet", Some(full))]).await;
    let m1 = manifest(&s3, &bucket, "orders1", &[("g.parquet", Some(group))]).await;
    let text = std::fs::read_to_string(dir.join("orders.redshift.sql")).expect("golden");
    let text = text
        .replace("\"Sales Mart\"", &format!("\"{mart}\""))
        .replace("\"stg\"", &format!("\"{stg}\""))
        .replace("s3://lake/loads/t/b/copy-0.manifest", &m0)
        .replace("s3://lake/loads/t/b/copy-1.manifest", &m1);
    let sections = golden_sections(&text);
    assert_eq!(
        sections.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["create_tables", "load", "after the commit"]
    );
    let d = run_batch(&e.client, &sections[0].1).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    // The golden load adds "amount" (a column the table gained); take it away first.
    let mut c = pg().await;
    for table in [
        format!("\"{mart}\".\"Order\""),
        format!("\"{stg}\".\"Order Stage\""),
    ] {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {table} DROP COLUMN amount"
        )))
        .execute(&mut c)
        .await
        .expect("drop amount");
    }
    for (name, sqls) in &sections[1..] {
        let d = run_batch(&e.client, sqls).await;
        assert_eq!(
            d.status(),
            Some(&StatusString::Finished),
            "orders {name}: {:?}",
            d.error()
        );
        if name == "load" {
            let copies: Vec<i64> = d
                .sub_statements()
                .iter()
                .filter(|s| s.query_string().is_some_and(|q| q.starts_with("COPY")))
                .map(|s| s.result_rows())
                .collect();
            assert_eq!(copies, [5, 4]);
            // The unresolved change rows, read by the query's sub-statement id.
            let at = d
                .sub_statements()
                .iter()
                .position(|s| s.query_string().is_some_and(|q| q.starts_with("SELECT")))
                .expect("the unresolved_changes query");
            assert_eq!(d.sub_statements()[at].result_rows(), 1);
            let r = e
                .client
                .get_statement_result()
                .id(d.sub_statements()[at].id())
                .send()
                .await
                .expect("GetStatementResult");
            assert_eq!(
                r.records(),
                [vec![
                    Field::StringValue("5".into()),
                    Field::StringValue("16".into()),
                    Field::StringValue("note,amount".into()),
                ]]
            );
        }
    }
    let got = pg_scalar(&format!(
        "SELECT string_agg(\"order\" || ':' || \"Note \"\"quoted\"\"\" || ':' || coalesce(amount::text, '-') || ':' || \"_lsn\", ',' ORDER BY \"order\") FROM \"{mart}\".\"Order\""
    ))
    .await;
    assert_eq!(
        got.as_deref(),
        Some("1:a:1.50:17,3:c:-:18,4:d:-:15"),
        "markers resolved in the batch; 5 (nothing to resolve from) not loaded"
    );
    let tomb = pg_scalar(&format!(
        "SELECT string_agg(\"order\" || ':' || \"_lsn\", ',') FROM \"{mart}\".\"Order__sluice_deleted\""
    ))
    .await;
    assert_eq!(tomb.as_deref(), Some("2:14"));
}

/// The golden file's statements by section (`-- create_tables`, `-- load`, `-- after the
/// commit`); other `-- ` lines name the statement that follows.
fn golden_sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.strip_prefix("-- ") {
            Some(s @ ("create_tables" | "load" | "after the commit")) => {
                out.push((s.to_string(), Vec::new()))
            }
            Some(_) => {}
            None => out
                .last_mut()
                .expect("a section header first")
                .1
                .push(line.to_string()),
        }
    }
    out
}
