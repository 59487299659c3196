//! Helpers for Lambda event payloads shared by every function.

/// Decodes an S3 event object key: `+` means a space, then percent-escapes (`%2F`, UTF-8
/// sequences). AWS never fills `urlDecodedKey`, so every handler goes through this.
pub fn decode_s3_key(raw: &str) -> Result<String, String> {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| format!("object key {raw:?} is not valid UTF-8 once decoded: {e}"))
}

#[cfg(test)]
mod tests {
    use super::decode_s3_key;

    #[test]
    fn decodes_plus_percent_and_unicode() {
        assert_eq!(
            decode_s3_key("raw/funnel/a+b.csv").as_deref(),
            Ok("raw/funnel/a b.csv")
        );
        assert_eq!(
            decode_s3_key("raw/funnel%2Fx.csv").as_deref(),
            Ok("raw/funnel/x.csv")
        );
        assert_eq!(
            decode_s3_key("raw/caf%C3%A9+%2B1.csv").as_deref(),
            Ok("raw/café +1.csv")
        );
        assert_eq!(
            decode_s3_key("raw/%E6%97%A5%E6%9C%AC.csv").as_deref(),
            Ok("raw/日本.csv")
        );
        assert!(decode_s3_key("raw/%FF.csv").is_err());
    }
}
