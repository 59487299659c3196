//! SQL spelling: identifier quoting and the few places where Redshift and PostgreSQL differ.
//! Every dialect difference of the load lives in this file.

/// The longest string Redshift stores: `VARCHAR(65535)`, counted in bytes of UTF-8, not in
/// characters. The transform quarantines longer output strings of tables with a warehouse
/// section, so the COPY never meets one (Redshift would fail the whole load on it).
pub const REDSHIFT_VARCHAR_MAX_BYTES: usize = 65_535;

/// The longest binary value Redshift stores: `VARBYTE(16777216)`. A bare `VARBYTE` holds only
/// 64,000 bytes, so binary columns are declared at this maximum, and the transform quarantines
/// longer binary outputs of tables with a warehouse section, as for strings. Source: "VARBYTE
/// type", Amazon Redshift Database Developer Guide
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_VARBYTE_type.html>): "The maximum number
/// of bytes (n) can range from 1 – 16,777,216. The default is 64,000."
/// COPY has a tighter bound of its own on whole rows: [`REDSHIFT_COPY_MAX_ROW_BYTES`].
pub const REDSHIFT_VARBYTE_MAX_BYTES: usize = 16_777_216;

/// The largest input row COPY takes: "The maximum size of a single input row from any source
/// is 4 MB" ("Data sources",
/// <https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source.html>). The
/// transform quarantines rows of warehouse tables whose values add up to more.
pub const REDSHIFT_COPY_MAX_ROW_BYTES: usize = 4 * 1024 * 1024;

/// The database a plan is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Amazon Redshift, through the Data API.
    Redshift,
    /// PostgreSQL: local runs and the tests.
    Postgres,
}

/// A quoted identifier: `"name"`, inner quotes doubled. Names come from the pipeline file and
/// are checked there (`config::check_identifier`); quoting makes reserved words, spaces, quotes
/// and upper case safe.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal: `'text'`, inner single quotes doubled.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

impl Dialect {
    /// The column type for a Glue type.
    pub fn column_type(self, glue_type: &str) -> String {
        let t = glue_type.to_ascii_lowercase();
        match (self, t.as_str()) {
            (_, "bigint") => "BIGINT".into(),
            (_, "double") => "DOUBLE PRECISION".into(),
            (_, "boolean") => "BOOLEAN".into(),
            (_, "date") => "DATE".into(),
            // Values are UTC instants; Parquet stores them UTC-adjusted.
            (_, "timestamp") => "TIMESTAMP".into(),
            // Redshift's longest VARCHAR; the transform quarantines longer strings.
            (Dialect::Redshift, "string") => format!("VARCHAR({REDSHIFT_VARCHAR_MAX_BYTES})"),
            (Dialect::Postgres, "string") => "TEXT".into(),
            // Redshift's longest VARBYTE (a bare VARBYTE is 64,000 bytes); the transform
            // quarantines longer values.
            (Dialect::Redshift, "binary") => format!("VARBYTE({REDSHIFT_VARBYTE_MAX_BYTES})"),
            (Dialect::Postgres, "binary") => "BYTEA".into(),
            (_, d) if d.starts_with("decimal(") => d.to_ascii_uppercase(),
            (_, other) => other.to_ascii_uppercase(),
        }
    }

    /// The statement that locks the final table for the rest of the transaction.
    pub fn lock(self, table: &str) -> String {
        match self {
            Dialect::Redshift => format!("LOCK {table}"),
            // EXCLUSIVE: readers go on, a second load waits.
            Dialect::Postgres => format!("LOCK TABLE {table} IN EXCLUSIVE MODE"),
        }
    }

    /// `CREATE TEMP TABLE` for a stage that lives only as long as the transaction needs it.
    pub fn create_temp(self, table: &str, body: &str) -> String {
        match self {
            Dialect::Redshift => format!("CREATE TEMP TABLE {table} {body}"),
            Dialect::Postgres => format!("CREATE TEMP TABLE {table} {body} ON COMMIT DROP"),
        }
    }

    /// `CREATE TEMP TABLE … AS SELECT …`.
    pub fn create_temp_as(self, table: &str, select: &str) -> String {
        match self {
            Dialect::Redshift => format!("CREATE TEMP TABLE {table} AS {select}"),
            Dialect::Postgres => format!("CREATE TEMP TABLE {table} ON COMMIT DROP AS {select}"),
        }
    }

    /// The current time, for the tombstones' `sluice_at`.
    pub fn now(self) -> &'static str {
        match self {
            Dialect::Redshift => "GETDATE()",
            Dialect::Postgres => "LOCALTIMESTAMP",
        }
    }

    /// The instant `days` days ago.
    pub fn days_ago(self, days: u32) -> String {
        match self {
            Dialect::Redshift => format!("DATEADD(day, -{days}, GETDATE())"),
            Dialect::Postgres => format!("LOCALTIMESTAMP - INTERVAL '{days} days'"),
        }
    }

    /// The COPY of Parquet files listed in a COPY manifest (Redshift's statement; the
    /// PostgreSQL executor streams the files itself and shows this text in logs only).
    pub fn copy_parquet(self, table: &str, manifest_url: &str, iam_role: &str) -> String {
        match self {
            Dialect::Redshift => format!(
                "COPY {table} FROM '{}' IAM_ROLE '{}' FORMAT AS PARQUET MANIFEST",
                manifest_url.replace('\'', "''"),
                iam_role.replace('\'', "''")
            ),
            Dialect::Postgres => format!("COPY {table} FROM STDIN WITH (FORMAT csv)"),
        }
    }

    /// Redshift folds quoted identifiers to lower case unless this is on.
    pub fn case_sensitive_identifiers(self) -> Option<String> {
        match self {
            Dialect::Redshift => Some("SET enable_case_sensitive_identifier TO true".into()),
            Dialect::Postgres => None,
        }
    }
}

/// Redshift Spectrum's view of a Glue database: an external schema `spectrum_<database>`, so
/// the lake's tables are queryable from Redshift without loading them.
pub fn spectrum_schema(glue_database: &str, iam_role: &str) -> String {
    format!(
        "CREATE EXTERNAL SCHEMA IF NOT EXISTS {} FROM DATA CATALOG DATABASE '{}' IAM_ROLE '{}'",
        quote_ident(&format!("spectrum_{glue_database}")),
        glue_database.replace('\'', "''"),
        iam_role.replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_whatever_they_hold() {
        assert_eq!(quote_ident("order"), "\"order\"");
        assert_eq!(quote_ident("Full Name"), "\"Full Name\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("Sales Mart", "Order"), "\"Sales Mart\".\"Order\"");
    }

    #[test]
    fn spectrum_schema_names_the_glue_database() {
        assert_eq!(
            spectrum_schema("sluice_lake", "arn:aws:iam::1:role/r"),
            "CREATE EXTERNAL SCHEMA IF NOT EXISTS \"spectrum_sluice_lake\" FROM DATA CATALOG DATABASE 'sluice_lake' IAM_ROLE 'arn:aws:iam::1:role/r'"
        );
    }

    #[test]
    fn types_per_dialect() {
        assert_eq!(Dialect::Redshift.column_type("string"), "VARCHAR(65535)");
        assert_eq!(Dialect::Postgres.column_type("string"), "TEXT");
        assert_eq!(
            Dialect::Postgres.column_type("decimal(12,2)"),
            "DECIMAL(12,2)"
        );
        assert_eq!(Dialect::Redshift.column_type("binary"), "VARBYTE(16777216)");
    }
}
