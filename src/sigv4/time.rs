//! SigV4's basic ISO 8601 timestamps (`20260226T120000Z`).

use super::AuthError;
use time::{
    format_description::FormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime,
};

const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

pub fn parse_amz_date(s: &str) -> Result<OffsetDateTime, AuthError> {
    if s.len() != 16 {
        return Err(AuthError::malformed(
            "X-Amz-Date must look like 20260226T120000Z",
        ));
    }
    PrimitiveDateTime::parse(s, AMZ_DATE)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| AuthError::malformed("X-Amz-Date must look like 20260226T120000Z"))
}

pub fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(AMZ_DATE).unwrap_or_default()
}

/// `Date: Thu, 26 Feb 2026 12:00:00 GMT` (or botocore's `... -0000`) as `20260226T120000Z`.
pub fn http_date_to_amz(s: &str) -> Result<String, AuthError> {
    let t = match httpdate::parse_http_date(s) {
        Ok(t) => OffsetDateTime::from(t),
        Err(_) => OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822)
            .map_err(|_| AuthError::malformed("the Date header is not an HTTP date"))?,
    };
    Ok(format_amz_date(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_converts() {
        let t = parse_amz_date("20260226T120000Z").unwrap();
        assert_eq!(format_amz_date(t), "20260226T120000Z");
        assert_eq!(
            http_date_to_amz("Thu, 26 Feb 2026 12:00:00 GMT").unwrap(),
            "20260226T120000Z"
        );
        assert_eq!(
            http_date_to_amz("Thu, 26 Feb 2026 12:00:00 -0000").unwrap(),
            "20260226T120000Z"
        );
        assert!(parse_amz_date("2026-02-26T12:00:00Z").is_err());
        assert!(parse_amz_date("20260230T120000Z").is_err());
    }
}
