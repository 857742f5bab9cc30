use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;

use super::errors::{to_py, type_error, value_error};
use super::extract::{counts_arg, non_empty, sequence, type_name, usize_arg};
use crate::core::batching;

#[pyfunction]
#[pyo3(signature = (lengths, max_tokens, max_batch_size = None))]
fn bucket_batches<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    max_tokens: &Bound<'py, PyAny>,
    max_batch_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
    let lengths = non_empty(counts_arg(lengths, "lengths")?, "lengths")?;
    let max_tokens = usize_arg(max_tokens, "max_tokens")?;
    let max_batch_size = match max_batch_size {
        Some(v) => usize_arg(v, "max_batch_size")?,
        None => 256,
    };
    let batches = py
        .detach(|| batching::bucket_batches(&lengths, max_tokens, max_batch_size))
        .map_err(to_py)?;
    Ok(batches
        .into_iter()
        .map(|b| b.into_iter().map(|i| i as i64).collect::<Vec<_>>().into_pyarray(py))
        .collect())
}

#[pyfunction]
fn padding_waste(lengths: &Bound<'_, PyAny>, batches: &Bound<'_, PyAny>) -> PyResult<f64> {
    let lengths = counts_arg(lengths, "lengths")?;
    let mut parsed = Vec::new();
    // Where each index was first seen: a batching holds every sequence once, and one counted twice
    // would report a waste no real batching has.
    let mut seen: Vec<Option<usize>> = vec![None; lengths.len()];
    for (b, batch) in sequence(batches, "batches")?.iter().enumerate() {
        let arg = format!("batches[{b}]");
        let idx = counts_arg(batch, &arg)?;
        for &i in &idx {
            match seen.get(i) {
                None => {
                    return Err(value_error(
                        &arg,
                        format!("index {i} out of range for {} lengths", lengths.len()),
                    ))
                }
                Some(Some(first)) => {
                    return Err(value_error(
                        &arg,
                        format!("index {i} appears twice (first in batches[{first}])"),
                    ))
                }
                Some(None) => seen[i] = Some(b),
            }
        }
        parsed.push(idx);
    }
    Ok(batching::padding_waste(&lengths, &parsed))
}

/// A token id: a Python int (never a bool) that fits in int64.
fn i64_arg(v: &Bound<'_, PyAny>, arg: &str) -> PyResult<i64> {
    if v.is_instance_of::<pyo3::types::PyBool>() || !v.is_instance_of::<pyo3::types::PyInt>() {
        return Err(type_error(arg, "int", &type_name(v)));
    }
    v.extract::<i64>()
        .map_err(|_| value_error(arg, "does not fit in int64"))
}

/// `(input_ids, attention_mask)`, both `[n, width]` int64.
type Padded<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<i64>>);

/// `pad`'s `pad_id`, extracted by [`i64_arg`] so that a bad value is reported under its name.
struct PadId(i64);

impl<'a, 'py> FromPyObject<'a, 'py> for PadId {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        i64_arg(&obj.to_owned(), "pad_id").map(PadId)
    }
}

#[pyfunction]
#[pyo3(signature = (token_id_lists, pad_id = PadId(0)))]
fn pad<'py>(py: Python<'py>, token_id_lists: &Bound<'py, PyAny>, pad_id: PadId) -> PyResult<Padded<'py>> {
    let PadId(pad_id) = pad_id;
    let rows = non_empty(sequence(token_id_lists, "token_id_lists")?, "token_id_lists")?;
    let mut seqs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let arg = format!("token_id_lists[{i}]");
        let ids: Vec<i64> = if let Ok(arr) = row.extract::<PyReadonlyArray1<'_, i64>>() {
            arr.as_array().to_vec()
        } else {
            sequence(row, &arg)?
                .iter()
                .enumerate()
                .map(|(j, v)| i64_arg(v, &format!("{arg}[{j}]")))
                .collect::<PyResult<_>>()?
        };
        seqs.push(ids);
    }
    let n = seqs.len();
    let (ids, mask, width) = py.detach(|| batching::pad(&seqs, pad_id));
    // from_vec hands the Vec's buffer to numpy; reshape makes a view, so no element is copied.
    let ids = ids.into_pyarray(py).reshape([n, width])?;
    let mask = mask.into_pyarray(py).reshape([n, width])?;
    Ok((ids, mask))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bucket_batches, m)?)?;
    m.add_function(wrap_pyfunction!(padding_waste, m)?)?;
    m.add_function(wrap_pyfunction!(pad, m)?)?;
    Ok(())
}
