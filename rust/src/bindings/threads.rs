//! pinrel's own rayon pool. A private pool (rather than rayon's global one) can be resized at run
//! time by `set_num_threads`, and does not fight with other rayon users in the same process.

use std::sync::{Arc, Mutex, RwLock};

use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use super::errors::value_error;
use super::extract::usize_arg;

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

/// Pools built before, newest last: switching back to a size used before reuses its warm threads
/// (their stacks and allocator arenas already faulted in) instead of spawning new ones, so code
/// that alternates sizes (a benchmark, a serving process reconfigured) pays for threads once.
static BUILT: Mutex<Vec<Arc<ThreadPool>>> = Mutex::new(Vec::new());
const KEEP_POOLS: usize = 4;

const MAX_THREADS: usize = 1024;

/// The thread count PINREL_NUM_THREADS asks for, if it holds one in 1..=MAX_THREADS. Exposed so
/// that Python code deciding whether the variable is in force reads it by the same rule.
#[pyfunction]
fn env_num_threads() -> Option<usize> {
    std::env::var("PINREL_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| (1..=MAX_THREADS).contains(&n))
}

fn default_threads() -> usize {
    env_num_threads().unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

fn pool_of(n: usize) -> Arc<ThreadPool> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.iter().find(|p| p.current_num_threads() == n) {
        return p.clone();
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("pinrel-{i}"))
            .build()
            .expect("building a rayon pool with a positive thread count cannot fail"),
    );
    if built.len() == KEEP_POOLS {
        built.remove(0);
    }
    built.push(pool.clone());
    pool
}

pub fn pool() -> Arc<ThreadPool> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return p.clone();
    }
    let mut guard = POOL.write().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(|| pool_of(default_threads())).clone()
}

/// Run `f` inside pinrel's pool so that rayon parallel iterators in the core use it.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

#[pyfunction]
fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
    let n = usize_arg(n, "n")?;
    if n == 0 || n > MAX_THREADS {
        return Err(value_error(
            "n",
            format!("must be between 1 and {MAX_THREADS}, got {n}"),
        ));
    }
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(pool_of(n));
    Ok(())
}

#[pyfunction]
fn get_num_threads() -> usize {
    pool().current_num_threads()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(env_num_threads, m)?)?;
    Ok(())
}
