//! Helpers the tests of every crate share, compiled only for tests, never into a Lambda:
//! `cfg(test)` here, and the `tests` crate compiles this same file as its own module
//! (`#[path]`), so there is one copy and no feature that a workspace build would switch on.

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
