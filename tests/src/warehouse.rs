//! The warehouse tests' common ground: the change table they load (`orders`, with awkward
//! warehouse names) and the final table read back from the test PostgreSQL.

use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::config::Pipeline;
use sluice::warehouse::LoadPlan;

use crate::pg_url;

/// A change table `orders` (`_op`, `_lsn`, `_commit_ts`; key `order`, a reserved word; `note`
/// as `Note Text`) loading into `schema`.`Order`, with `amount` when `with_amount` (a column
/// added later), and the load's LOCK on or off.
pub fn change_table(schema: &str, with_amount: bool, lock: bool) -> Pipeline {
    let amount = if with_amount {
        "\n  { name = \"amount\", type = \"decimal(12,2)\" },"
    } else {
        ""
    };
    let text = format!(
        r#"
[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = {{ key = ["order"], order_by = "_lsn" }}
catalog = {{ database = "db" }}
warehouse = {{ schema = "{schema}", table = "Order", merge_keys = ["order"], lock = {lock}, columns = {{ note = "Note Text" }} }}
columns = [
  {{ name = "order", type = "int" }},
  {{ name = "note", type = "string" }},{amount}
  {{ name = "_op", type = "string" }},
  {{ name = "_lsn", type = "int" }},
  {{ name = "_commit_ts", type = "timestamp" }},
]
"#
    );
    Pipeline::parse(&text, "test").expect("pipeline")
}

/// A final table's rows as text (`select` over its columns), ordered by `order`.
pub async fn table_rows(plan: &LoadPlan, select: &str, order: &str) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(&pg_url())
        .await
        .expect("connect");
    let sql = format!(
        "SELECT ({select})::text FROM {} ORDER BY {order}",
        plan.final_table()
    );
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut c)
        .await
        .expect("select")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

/// The change table's final rows as `order|note|amount|lsn|commit_ts` (∅ for NULL).
pub async fn change_rows(plan: &LoadPlan, with_amount: bool) -> Vec<String> {
    let amount = if with_amount {
        "\"amount\"::text"
    } else {
        "NULL::text"
    };
    let select = format!(
        "\"order\"::text || '|' || COALESCE(\"Note Text\", '∅') || '|' || COALESCE({amount}, '∅') || '|' || \"_lsn\"::text || '|' || \"_commit_ts\"::text"
    );
    table_rows(plan, &select, "\"order\"").await
}

/// A change table `docs` with values the source may TOAST, left out of updates as unchanged
/// (`_unchanged`): `body` (string), `blob` (binary), `price` (decimal), beside `title`
/// (string); key `id`; loading into `schema`.`Docs`. The change columns are declared as
/// built-in columns.
pub fn toast_table(schema: &str) -> Pipeline {
    let text = format!(
        r#"
[[tables]]
name = "docs"
raw_prefix = "raw/cdc/docs/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = {{ key = ["id"], order_by = "_lsn" }}
catalog = {{ database = "db" }}
warehouse = {{ schema = "{schema}", table = "Docs", merge_keys = ["id"] }}
columns = [
  {{ name = "id", type = "int" }},
  {{ name = "title", type = "string" }},
  {{ name = "body", type = "string" }},
  {{ name = "blob", type = "binary" }},
  {{ name = "price", type = "decimal(30,10)" }},
  {{ name = "_op", type = "string" }},
  {{ name = "_lsn", type = "int" }},
  {{ name = "_commit_ts", type = "timestamp" }},
  {{ name = "_unchanged", type = "string" }},
]
"#
    );
    Pipeline::parse(&text, "test").expect("pipeline")
}

/// The `docs` final rows as `id|title|body|blob in hex|price|lsn` (∅ for NULL).
pub async fn toast_rows(plan: &LoadPlan) -> Vec<String> {
    let select = "\"id\"::text || '|' || COALESCE(\"title\", '∅') || '|' || COALESCE(\"body\", '∅') || '|' || COALESCE(encode(\"blob\", 'hex'), '∅') || '|' || COALESCE(\"price\"::text, '∅') || '|' || \"_lsn\"::text";
    table_rows(plan, select, "\"id\"").await
}
