//! PII rules: what happens to a personal-data column or extracted JSON field.

use serde::Deserialize;

use super::types::ColumnType;
use super::TableConfig;

/// What happens to a personal-data column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// The column never reaches the lake.
    Drop,
    /// Replaced by `<name>_hash`: hex HMAC-SHA256 of the value's text under the pipeline's
    /// hash key (joinable across tables, not reversible without the key).
    Hash,
    /// A date/timestamp replaced by `<name>_year` (int).
    Year,
    /// A date of birth replaced by `<name>_age_band` (e.g. `30-39`), the age as of the row's
    /// own `as_of` date, so output never drifts with the day the pipeline ran.
    AgeBand,
}

/// A PII rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiRule {
    /// What to do.
    pub action: PiiAction,
    /// For `age_band`: the date/timestamp column (input name) the age is computed at.
    #[serde(default)]
    pub as_of: Option<String>,
    /// For `age_band`: width of a band in years (default 10).
    #[serde(default)]
    pub band_years: Option<u32>,
}

impl PiiRule {
    /// Checks the rule for a value of type `ty` in table `t`; the reason on failure.
    pub(crate) fn validate(&self, ty: ColumnType, t: &TableConfig) -> Result<(), String> {
        match self.action {
            PiiAction::Drop | PiiAction::Hash => {
                if self.as_of.is_some() || self.band_years.is_some() {
                    return Err("`as_of` and `band_years` apply to age_band only".into());
                }
            }
            PiiAction::Year => {
                if !matches!(ty, ColumnType::Date | ColumnType::Timestamp) {
                    return Err("`year` applies to date and timestamp columns".into());
                }
            }
            PiiAction::AgeBand => {
                if !matches!(ty, ColumnType::Date | ColumnType::Timestamp) {
                    return Err("`age_band` applies to date and timestamp columns".into());
                }
                let Some(as_of) = &self.as_of else {
                    return Err(
                        "`age_band` needs `as_of`: the row's own date column the age is computed at"
                            .into(),
                    );
                };
                match t.columns.iter().find(|c| &c.name == as_of) {
                    Some(c) if matches!(c.ty, ColumnType::Date | ColumnType::Timestamp) => {}
                    _ => {
                        return Err(format!(
                            "as_of `{as_of}` must name a date or timestamp column of the table"
                        ))
                    }
                }
                if self.band_years == Some(0) {
                    return Err("`band_years` must be positive".into());
                }
            }
        }
        Ok(())
    }
}
