//! A row's output values after the PII rules: plain values as they are, keyed hashes (hex
//! HMAC-SHA256 of the value's text), years, and age bands as of the row's own date.

use std::borrow::Cow;

use hmac::{KeyInit, Mac};

use crate::secrets::HashKey;
use crate::transform::plan::{Out, OutKind, Plan};
use crate::transform::values::{self, Val};
use crate::transform::TransformError;

use super::writer::ColBuilder;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Applies the PII rules while appending output values.
pub(crate) struct Masker {
    /// The keyed hash, ready to clone for each value (`None` when no output hashes).
    mac: Option<HmacSha256>,
    /// The text of the value being hashed, reused from value to value.
    text: Vec<u8>,
}

impl Masker {
    /// Fails when the table hashes a column and the key is missing or unusable.
    pub(crate) fn new(plan: &Plan, hash_key: Option<&HashKey>) -> Result<Self, TransformError> {
        let mac = match hash_key {
            Some(k) => Some(
                <HmacSha256 as KeyInit>::new_from_slice(k.bytes())
                    .map_err(|_| TransformError::HashKey)?,
            ),
            None => None,
        };
        if mac.is_none() && plan.outs.iter().any(|o| matches!(o.kind, OutKind::Hash)) {
            return Err(TransformError::HashKey);
        }
        Ok(Self {
            mac,
            text: Vec::with_capacity(128),
        })
    }

    /// Appends one row's output values, one per builder. Hot loop: one match per output
    /// column, no allocation but an age band's text.
    pub(crate) fn append_row(
        &mut self,
        outs: &[Out],
        vals: &[Val<'_>],
        builders: &mut [ColBuilder],
    ) -> Result<(), TransformError> {
        for (o, b) in outs.iter().zip(builders.iter_mut()) {
            let v = &vals[o.slot];
            match o.kind {
                OutKind::Plain => b.append(v),
                OutKind::Hash => match v {
                    Val::Null => b.append(&Val::Null),
                    v => {
                        let mut hex = [0u8; 64];
                        let s = self.hash_hex(v, &mut hex)?;
                        b.append(&Val::Str(Cow::Borrowed(s)));
                    }
                },
                OutKind::Year => match v {
                    Val::Ts(us) => b.append(&Val::I64(values::ts_year_month(*us).0)),
                    Val::Date(d) => b.append(&Val::I64(values::date_ymd(i64::from(*d)).0)),
                    _ => b.append(&Val::Null),
                },
                OutKind::AgeBand {
                    as_of_slot,
                    band_years,
                } => match age_band(v, &vals[as_of_slot], band_years) {
                    Some(s) => b.append(&Val::Str(Cow::Owned(s))),
                    None => b.append(&Val::Null),
                },
            }
        }
        Ok(())
    }

    /// The hex HMAC-SHA256 of the value's text, in `hex`.
    fn hash_hex<'h>(
        &mut self,
        v: &Val<'_>,
        hex: &'h mut [u8; 64],
    ) -> Result<&'h str, TransformError> {
        // `new` refused a plan that hashes without a key: this is only a guard.
        let Some(mac) = &self.mac else {
            return Err(TransformError::HashKey);
        };
        self.text.clear();
        canonical_text(v, &mut self.text);
        let mut m = mac.clone();
        m.update(&self.text);
        let digest = m.finalize().into_bytes();
        Ok(hex::encode_to_slice(digest, hex)
            .ok()
            .and_then(|()| std::str::from_utf8(hex).ok())
            .unwrap_or_default())
    }
}

/// The age band (`20-29`, or `25` for bands of one year) of a date of birth at a date.
fn age_band(dob: &Val<'_>, at: &Val<'_>, band_years: u32) -> Option<String> {
    let (dob, at) = (ymd_of(dob)?, ymd_of(at)?);
    let mut age = at.0 - dob.0;
    if (at.1, at.2) < (dob.1, dob.2) {
        age -= 1;
    }
    if age < 0 {
        return None;
    }
    let w = i64::from(band_years.max(1));
    let lo = age / w * w;
    Some(if w == 1 {
        format!("{lo}")
    } else {
        format!("{lo}-{}", lo + w - 1)
    })
}

fn ymd_of(v: &Val<'_>) -> Option<(i64, u32, u32)> {
    match v {
        Val::Date(d) => Some(values::date_ymd(i64::from(*d))),
        Val::Ts(us) => Some(values::date_ymd(us.div_euclid(86_400_000_000))),
        _ => None,
    }
}

/// Decimal text of an integer without `core::fmt` (the hot path of hashing id columns).
fn push_i64(x: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = x.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if x < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// The text a value is hashed as: what a user would type to look it up (`123`, `a@b.c`).
fn canonical_text(v: &Val<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = match v {
        Val::Null => Ok(()),
        Val::I64(x) => {
            push_i64(*x, out);
            Ok(())
        }
        Val::F64(x) => write!(out, "{x}"),
        Val::Dec(x) => write!(out, "{x}"),
        Val::Bool(b) => write!(out, "{b}"),
        Val::Str(s) => out.write_all(s.as_bytes()),
        Val::Bin(b) => out.write_all(b),
        Val::Date(d) => {
            let (y, m, dd) = values::date_ymd(i64::from(*d));
            write!(out, "{y:04}-{m:02}-{dd:02}")
        }
        Val::Ts(us) => {
            let (y, m, dd) = values::date_ymd(us.div_euclid(86_400_000_000));
            let s = us.rem_euclid(86_400_000_000);
            write!(
                out,
                "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
                s / 3_600_000_000,
                s / 60_000_000 % 60,
                s / 1_000_000 % 60,
                s % 1_000_000
            )
        }
    };
}

#[cfg(test)]
#[test]
fn push_i64_matches_display() {
    for x in [0i64, 7, -7, 10, 599_999_999, i64::MAX, i64::MIN] {
        let mut v = Vec::new();
        push_i64(x, &mut v);
        assert_eq!(String::from_utf8(v).as_deref(), Ok(x.to_string().as_str()));
    }
}
