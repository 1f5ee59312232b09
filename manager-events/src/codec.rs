//! How domain events are stored: an event's type is its enum variant name and
//! its payload is the variant's content, so the log reads
//! `DomainCreated {"name": ...}`, not a Rust-specific wrapper. Both the write
//! side (appending) and projectors (reading) use these two functions.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why an event could not be turned into (or read back from) a log entry.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The event did not serialize as a single-key object `{Variant: payload}`.
    #[error("event does not serialize as {{\"Type\": payload}}: {0}")]
    Shape(String),
    /// serde failed.
    #[error(transparent)]
    Serde(#[from] serde_json::Error),
}

/// Splits an event into its type name and payload for the log.
pub fn encode<E: Serialize>(event: &E) -> Result<(String, Value), CodecError> {
    match serde_json::to_value(event)? {
        Value::Object(map) if map.len() == 1 => {
            let Some((event_type, payload)) = map.into_iter().next() else {
                return Err(CodecError::Shape("empty object".into()));
            };
            Ok((event_type, payload))
        }
        Value::String(unit) => Ok((unit, Value::Null)),
        other => Err(CodecError::Shape(other.to_string())),
    }
}

/// Rebuilds an event from its type name and payload.
pub fn decode<E: DeserializeOwned>(event_type: &str, payload: &Value) -> Result<E, CodecError> {
    let value = if payload.is_null() {
        Value::String(event_type.to_owned())
    } else {
        let mut map = serde_json::Map::with_capacity(1);
        map.insert(event_type.to_owned(), payload.clone());
        Value::Object(map)
    };
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Created { name: String },
        Touched,
    }

    #[test]
    fn events_are_stored_as_type_and_payload() {
        let (t, p) = encode(&Ev::Created { name: "x".into() }).unwrap();
        assert_eq!(
            (t.as_str(), p.clone()),
            ("Created", serde_json::json!({"name": "x"}))
        );
        assert_eq!(
            decode::<Ev>(&t, &p).unwrap(),
            Ev::Created { name: "x".into() }
        );
        let (t, p) = encode(&Ev::Touched).unwrap();
        assert_eq!((t.as_str(), &p), ("Touched", &Value::Null));
        assert_eq!(decode::<Ev>(&t, &p).unwrap(), Ev::Touched);
        assert!(decode::<Ev>("Unknown", &p).is_err());
    }
}
