//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::PyErr;

use crate::core::CoreError;

pub fn to_py(err: CoreError) -> PyErr {
    match err {
        CoreError::InvalidValue { .. } => PyValueError::new_err(err.to_string()),
    }
}

pub fn type_error(arg: &str, expected: &str, got: &str) -> PyErr {
    PyTypeError::new_err(format!("{arg}: expected {expected}, got {got}"))
}

pub fn value_error(arg: &str, msg: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{arg}: {msg}"))
}
