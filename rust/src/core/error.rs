use thiserror::Error;

/// Every failure the core can report. Messages always name the offending argument (and index,
/// where there is one) because they reach users verbatim as Python exceptions.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A value is outside its allowed range or otherwise unusable (maps to `ValueError`).
    #[error("{arg}: {msg}")]
    InvalidValue { arg: String, msg: String },
}

impl CoreError {
    pub fn invalid(arg: impl Into<String>, msg: impl Into<String>) -> Self {
        CoreError::InvalidValue {
            arg: arg.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
