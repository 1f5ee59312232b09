//! The reference's custom scalars: `DateTime`, `BigInt` and `JSONString`.

use juniper::{GraphQLScalar, Scalar, ScalarValue};

/// A timestamp, written as Python's `isoformat()` writes an aware UTC time
/// (`2024-01-15T12:30:45.123456+00:00`), which is what the reference sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, GraphQLScalar)]
#[graphql(
    name = "DateTime",
    to_output_with = Self::iso,
    from_input_with = Self::from_input,
    parse_token(String)
)]
pub struct DateTime(pub chrono::DateTime<chrono::Utc>);

impl DateTime {
    fn iso(&self) -> String {
        use chrono::{Datelike, Timelike};
        let t = &self.0;
        if !(0..=9999).contains(&t.year()) {
            return t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
        }
        // As the format above, without interpreting a format string for
        // each of the thousands of timestamps a page may hold.
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() % 1_000_000_000 / 1000
        )
    }

    fn from_input(s: &str) -> Result<Self, Box<str>> {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| DateTime(t.with_timezone(&chrono::Utc)))
            .map_err(|e| format!("Failed to parse `DateTime`: {e}").into())
    }
}

impl From<chrono::DateTime<chrono::Utc>> for DateTime {
    fn from(t: chrono::DateTime<chrono::Utc>) -> Self {
        DateTime(t)
    }
}

/// A 64-bit integer. Values that fit 32 bits are sent as JSON integers;
/// larger ones as JSON numbers with no fraction (the GraphQL value model has
/// no wider integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, GraphQLScalar)]
#[graphql(
    name = "BigInt",
    to_output_with = Self::to_output,
    from_input_with = Self::from_input,
    parse_token(i32, f64, String)
)]
pub struct BigInt(pub i64);

impl BigInt {
    fn to_output<S: ScalarValue>(v: &BigInt) -> S {
        match i32::try_from(v.0) {
            Ok(small) => small.into(),
            // Exact up to 2^53, which covers every byte count and duration.
            #[allow(clippy::cast_precision_loss)]
            Err(_) => (v.0 as f64).into(),
        }
    }

    fn from_input(v: &Scalar<impl ScalarValue>) -> Result<Self, Box<str>> {
        if let Some(i) = v.try_to_int() {
            return Ok(BigInt(i64::from(i)));
        }
        if let Some(f) = v.try_to_float() {
            #[allow(clippy::cast_possible_truncation)]
            if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                return Ok(BigInt(f as i64));
            }
            return Err(format!("Expected an integer `BigInt`, found: {f}").into());
        }
        if let Some(s) = v.try_to_string() {
            return s
                .trim()
                .parse()
                .map(BigInt)
                .map_err(|_| format!("Expected an integer `BigInt`, found: {s:?}").into());
        }
        Err(format!("Expected `BigInt`, found: {v}").into())
    }
}

/// A JSON document carried as a string (`"{\"cpu\": \"1\"}"`), as the
/// reference's `JSONString`.
#[derive(Debug, Clone, PartialEq, Eq, GraphQLScalar)]
#[graphql(name = "JSONString", transparent)]
pub struct JsonString(pub String);

impl JsonString {
    /// Encodes a JSON value the way the reference's `json.dumps` does
    /// (`{"cpu": "1", "mem": "2"}`, with a space after `:` and `,`).
    pub fn of(value: &serde_json::Value) -> Self {
        use serde::Serialize;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonStyle);
        match value.serialize(&mut ser) {
            Ok(()) => JsonString(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => JsonString(value.to_string()),
        }
    }

    /// Decodes the text, naming `field` in the error.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<T, String> {
        serde_json::from_str(&self.0).map_err(|e| format!("{field}: not valid JSON here ({e})"))
    }
}

/// `json.dumps`'s default separators.
struct PythonStyle;

impl serde_json::ser::Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::JsonString;
    use serde_json::json;

    #[test]
    fn json_strings_are_written_as_python_writes_them() {
        let v = json!({"cpu": "1", "hosts": {"local": ["a", "b"]}, "empty": {}});
        assert_eq!(
            JsonString::of(&v).0,
            r#"{"cpu": "1", "empty": {}, "hosts": {"local": ["a", "b"]}}"#
        );
        let back: serde_json::Value = JsonString::of(&v).parse("x").unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn timestamps_print_as_the_reference() {
        use super::DateTime;
        use chrono::TimeZone;
        for (secs, nanos) in [
            (0, 0),
            (1_700_000_000, 123_456_789),
            (253_402_300_799, 999_999_999),
        ] {
            let t = chrono::Utc.timestamp_opt(secs, nanos).unwrap();
            assert_eq!(
                DateTime(t).iso(),
                t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
            );
        }
        let t = chrono::Utc.timestamp_opt(1_700_000_000, 5_000).unwrap();
        assert_eq!(DateTime(t).iso(), "2023-11-14T22:13:20.000005+00:00");
    }
}
