//! The pure-Rust core of pinrel. Nothing in here knows about Python: the bindings layer
//! (`crate::bindings`) converts arguments, releases the GIL, and maps `CoreError` to exceptions.

pub mod assemble;
pub mod batching;
pub mod error;
pub mod hashing;
pub mod matching;
pub mod recycle;
pub mod text;

pub use error::CoreError;
