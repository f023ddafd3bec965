//! Time as Cedar reads it. Cedar's `datetime` takes whole seconds or exactly three
//! fractional digits; a `jiff` timestamp prints nanoseconds, which Cedar refuses (and a
//! refused context denies every request it was part of).

use std::str::FromStr;

use cedar_policy::RestrictedExpression;

/// `now` as a Cedar `datetime(...)` value, to the millisecond, in UTC.
pub fn datetime(now: jiff::Timestamp) -> Result<RestrictedExpression, String> {
    let text = now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    RestrictedExpression::from_str(&format!("datetime({text:?})"))
        .map_err(|e| format!("the time {text} cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_timestamp_is_a_cedar_datetime() {
        for t in [
            "2026-12-01T12:00:00Z",
            "2026-12-02T20:40:12.123456789Z",
            "2026-12-02T20:40:12.000000001Z",
            "1970-01-01T00:00:00Z",
        ] {
            let ts: jiff::Timestamp = t.parse().unwrap();
            assert!(datetime(ts).is_ok(), "{t}");
        }
        assert!(datetime(jiff::Timestamp::now()).is_ok());
    }
}
