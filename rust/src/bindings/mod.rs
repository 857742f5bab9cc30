//! Thin pyo3 wrappers: convert arguments, release the GIL around the core, map errors.

mod assemble;
mod batching;
mod errors;
mod extract;
mod hashing;
mod threads;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    assemble::register(m)?;
    hashing::register(m)?;
    batching::register(m)?;
    threads::register(m)?;
    Ok(())
}
