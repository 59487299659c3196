//! Helpers the tests of every crate share, compiled only for tests (`cfg(test)` here, the
//! `test-support` feature for the `tests` crate), never into a Lambda.

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Rows of a batch rendered `col=value|…`, nulls as `∅`: compact, readable in an assertion
/// diff, and exact (every value through arrow's own formatter).
pub fn render_rows(b: &RecordBatch) -> Vec<String> {
    let opts = FormatOptions::default().with_null("∅");
    let fmts: Vec<_> = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
        .collect();
    let schema = b.schema();
    (0..b.num_rows())
        .map(|r| {
            schema
                .fields()
                .iter()
                .zip(&fmts)
                .map(|(f, x)| format!("{}={}", f.name(), x.value(r)))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}
