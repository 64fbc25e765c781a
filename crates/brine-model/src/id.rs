//! Validated identifier newtypes and the shared name validation rule.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The value is empty.
    Empty,
    /// The value is longer than the limit.
    TooLong {
        /// Length of the value in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The value contains a NUL byte.
    ContainsNul,
    /// The value contains whitespace.
    ContainsWhitespace,
    /// Any other rule, described in words.
    Other(String),
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidReason::Empty => f.write_str("must not be empty"),
            InvalidReason::TooLong { len, max } => write!(f, "is {len} bytes long, at most {max} allowed"),
            InvalidReason::ContainsNul => f.write_str("must not contain a NUL byte"),
            InvalidReason::ContainsWhitespace => f.write_str("must not contain whitespace"),
            InvalidReason::Other(s) => f.write_str(s),
        }
    }
}

/// A field value that breaks a validation rule. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct ValidationError {
    /// The field that holds the bad value, e.g. `job_id` or `namespace`.
    pub field: &'static str,
    /// The refused value (cut to 64 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: InvalidReason,
}

impl ValidationError {
    /// A validation error for `field` holding `value`.
    pub fn new(field: &'static str, value: &str, reason: InvalidReason) -> Self {
        let value = value.chars().take(64).collect();
        ValidationError { field, value, reason }
    }
}

/// Checks `value` against the identifier rule, with at most `max` bytes.
///
/// Used for ids and for every name that becomes part of a key (namespaces, queue
/// names, checkpoint names, label keys).
pub fn validate_name(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    let reason = if value.is_empty() {
        InvalidReason::Empty
    } else if value.len() > max {
        InvalidReason::TooLong { len: value.len(), max }
    } else if value.contains('\0') {
        InvalidReason::ContainsNul
    } else if value.chars().any(char::is_whitespace) {
        InvalidReason::ContainsWhitespace
    } else {
        return Ok(());
    };
    Err(ValidationError::new(field, value, reason))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The field name used in validation errors.
            pub const FIELD: &'static str = $field;

            /// Validates and wraps an identifier.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                validate_name($field, &value, MAX_ID_LEN)?;
                Ok($name(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier as bytes, for key encoding.
            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// Identifier of an execution (one attempt to run a job on a node).
    ExecutionId,
    "execution_id"
);
id_type!(
    /// Identifier of a job.
    JobId,
    "job_id"
);
id_type!(
    /// Identifier of an evaluation (a scheduling decision request).
    EvaluationId,
    "evaluation_id"
);
id_type!(
    /// Identifier of a compute or requester node.
    NodeId,
    "node_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(ExecutionId::new("e-42bd").unwrap().as_str(), "e-42bd");
        assert!(JobId::new("x".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn refuses_bad_ids_naming_the_field() {
        let cases: [(&str, InvalidReason); 4] = [
            ("", InvalidReason::Empty),
            ("a\0b", InvalidReason::ContainsNul),
            ("a b", InvalidReason::ContainsWhitespace),
            ("a\tb", InvalidReason::ContainsWhitespace),
        ];
        for (value, reason) in cases {
            let err = JobId::new(value).unwrap_err();
            assert_eq!(err.field, "job_id");
            assert_eq!(err.reason, reason);
            assert!(err.to_string().starts_with("invalid job_id"), "{err}");
        }
        let err = ExecutionId::new("y".repeat(MAX_ID_LEN + 1)).unwrap_err();
        assert_eq!(err.reason, InvalidReason::TooLong { len: 256, max: 255 });
        assert_eq!(err.field, "execution_id");
    }

    #[test]
    fn deserializing_validates() {
        let ok: NodeId = serde_json::from_str("\"node-1\"").unwrap();
        assert_eq!(ok.as_str(), "node-1");
        let err = serde_json::from_str::<NodeId>("\"node 1\"").unwrap_err();
        assert!(err.to_string().contains("invalid node_id"), "{err}");
    }
}
