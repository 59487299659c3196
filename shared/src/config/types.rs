use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A column's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 64-bit signed integer (Glue `bigint`).
    Int,
    /// 64-bit float (Glue `double`).
    Float,
    /// Exact decimal with `precision` digits, `scale` after the point (Glue `decimal(p,s)`).
    Decimal { precision: u8, scale: i8 },
    /// true/false, t/f, yes/no, 1/0 (Glue `boolean`).
    Bool,
    /// UTF-8 text (Glue `string`).
    String,
    /// Bytes, base64 in the input (Glue `binary`).
    Binary,
    /// Calendar date (Glue `date`).
    Date,
    /// Instant, stored as UTC microseconds (Glue `timestamp`).
    Timestamp,
    /// JSON text or object, parsed and flattened into its declared fields.
    Json,
}

impl ColumnType {
    /// The Hive/Glue type name.
    pub fn glue_type(&self) -> String {
        match self {
            ColumnType::Int => "bigint".into(),
            ColumnType::Float => "double".into(),
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            ColumnType::Bool => "boolean".into(),
            ColumnType::String | ColumnType::Json => "string".into(),
            ColumnType::Binary => "binary".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp".into(),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Int => f.write_str("int"),
            ColumnType::Float => f.write_str("float"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Binary => f.write_str("binary"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Json => f.write_str("json"),
        }
    }
}

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "int" | "bigint" | "integer" => ColumnType::Int,
            "float" | "double" => ColumnType::Float,
            "bool" | "boolean" => ColumnType::Bool,
            "string" => ColumnType::String,
            "binary" => ColumnType::Binary,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            _ => {
                let inner = t
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown type `{s}`: expected int, float, decimal(p,s), bool, string, binary, date, timestamp or json"))?;
                let (p, sc) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("`{s}`: decimal needs (precision,scale)"))?;
                let precision: u8 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{s}`: bad precision"))?;
                let scale: i8 = sc.trim().parse().map_err(|_| format!("`{s}`: bad scale"))?;
                if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
                    return Err(format!(
                        "`{s}`: precision must be 1..=38 and 0 <= scale <= precision"
                    ));
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
