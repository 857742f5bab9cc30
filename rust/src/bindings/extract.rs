//! Argument extraction with messages that name the argument and the index of a bad element.
//! pyo3's generic conversions say only "cannot convert"; users need to know *which* element.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyString, PyTuple};

use super::errors::{type_error, value_error};

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Borrow a Python str as UTF-8. Lone surrogates cannot be encoded, so they are reported as a
/// ValueError that names the argument rather than leaking a UnicodeEncodeError from deep inside.
pub fn as_str<'a>(obj: &'a Bound<'_, PyAny>, arg: &str) -> PyResult<&'a str> {
    as_str_lazy(obj, || arg.to_owned())
}

/// [`as_str`] for per-element names such as `texts[41]`: formatting a name for every element of a
/// large input costs about as much as assembling a short item, so it is built only for an error.
pub fn as_str_lazy<'a>(obj: &'a Bound<'_, PyAny>, arg: impl FnOnce() -> String) -> PyResult<&'a str> {
    match obj.cast::<PyString>() {
        Ok(s) => s
            .to_str()
            .map_err(|_| value_error(&arg(), "string is not valid Unicode (it contains a lone surrogate)")),
        Err(_) => Err(type_error(&arg(), "str", &type_name(obj))),
    }
}

/// The elements of a list or tuple; anything else (a str, a generator, None) is a TypeError because
/// silently iterating a str character by character is a classic bug.
pub fn sequence<'py>(obj: &Bound<'py, PyAny>, arg: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(list) = obj.cast::<PyList>() {
        return Ok(list.iter().collect());
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return Ok(tuple.iter().collect());
    }
    Err(type_error(arg, "a list or tuple", &type_name(obj)))
}

/// A list of str, kept as Python objects so the UTF-8 views borrowed from them stay valid while the
/// GIL is released (Python str objects are immutable and cache their UTF-8 form).
pub fn str_objects<'py>(obj: &Bound<'py, PyAny>, arg: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let items = sequence(obj, arg)?;
    for (i, item) in items.iter().enumerate() {
        as_str_lazy(item, || format!("{arg}[{i}]"))?;
    }
    Ok(items)
}

pub fn borrow_strs<'a>(objs: &'a [Bound<'_, PyAny>], arg: &str) -> PyResult<Vec<&'a str>> {
    objs.iter()
        .enumerate()
        .map(|(i, o)| as_str_lazy(o, || format!("{arg}[{i}]")))
        .collect()
}

/// An optional list of strings for list-valued item fields: None means absent, a bare str is
/// accepted as a one-element list (a common shape in real catalogs), anything else names the field.
/// The argument name comes from `arg` only when there is an error (see [`as_str_lazy`]).
pub fn opt_str_list(obj: Option<Bound<'_, PyAny>>, arg: impl Fn() -> String) -> PyResult<Vec<String>> {
    let Some(obj) = obj else { return Ok(Vec::new()) };
    if obj.is_none() {
        return Ok(Vec::new());
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(vec![as_str_lazy(&obj, arg)?.to_owned()]);
    }
    let items = sequence(&obj, "").map_err(|_| type_error(&arg(), "a list of str or None", &type_name(&obj)))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.is_none() {
            continue;
        }
        out.push(as_str_lazy(item, || format!("{}[{i}]", arg()))?.to_owned());
    }
    Ok(out)
}

/// The argument name comes from `arg` only when there is an error (see [`as_str_lazy`]).
pub fn opt_str(obj: Option<Bound<'_, PyAny>>, arg: impl FnOnce() -> String) -> PyResult<Option<String>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => Ok(Some(as_str_lazy(&o, arg)?.to_owned())),
    }
}

/// A non-negative integer that also refuses bool (True is an int in Python, never a length).
pub fn usize_arg(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<usize> {
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(type_error(arg, "int", "bool"));
    }
    if obj.is_instance_of::<pyo3::types::PyFloat>() {
        let v: f64 = obj.extract()?;
        if v.is_nan() {
            return Err(value_error(arg, "must be an integer, got NaN"));
        }
        return Err(type_error(arg, "int", "float"));
    }
    let v: i128 = obj.extract().map_err(|_| type_error(arg, "int", &type_name(obj)))?;
    if v < 0 {
        return Err(value_error(arg, format!("must be >= 0, got {v}")));
    }
    usize::try_from(v).map_err(|_| value_error(arg, format!("{v} is too large")))
}

/// Empty input is almost always an upstream bug (an empty shard, a filter that dropped everything),
/// so the public entry points refuse it loudly instead of returning an empty result.
pub fn non_empty<T>(v: Vec<T>, arg: &str) -> PyResult<Vec<T>> {
    if v.is_empty() {
        return Err(value_error(arg, "must not be empty"));
    }
    Ok(v)
}

/// Non-negative integers (lengths, or a batch's indices) from a list of ints or a 1-D numpy array
/// (integer or float; floats must be whole); errors name `name[i]`.
pub fn counts_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<usize>> {
    // as_array rather than as_slice: a strided view (`lengths[::2]`) is valid input, not an error.
    if let Ok(arr) = obj.extract::<PyReadonlyArray1<'_, i64>>() {
        return int_counts(arr.as_array().iter().copied(), name);
    }
    // int32: numpy's default integer on some platforms, and what `dtype=np.int32` gives.
    if let Ok(arr) = obj.extract::<PyReadonlyArray1<'_, i32>>() {
        return int_counts(arr.as_array().iter().copied(), name);
    }
    if let Ok(arr) = obj.extract::<PyReadonlyArray1<'_, f64>>() {
        return arr
            .as_array()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let arg = format!("{name}[{i}]");
                if !v.is_finite() {
                    Err(value_error(&arg, format!("must be a finite integer, got {v}")))
                } else if v < 0.0 || v.fract() != 0.0 {
                    Err(value_error(&arg, format!("must be a non-negative integer, got {v}")))
                } else {
                    Ok(v as usize)
                }
            })
            .collect();
    }
    if obj.hasattr("dtype")? && !obj.is_instance_of::<PyList>() {
        return Err(type_error(
            name,
            "a 1-D array of int32, int64 or float64 (or a list of int)",
            &type_name(obj),
        ));
    }
    sequence(obj, name)?
        .iter()
        .enumerate()
        .map(|(i, v)| usize_arg(v, &format!("{name}[{i}]")))
        .collect()
}

/// A Python bool; `None` (the argument left out) is `default`. An int such as 1 is refused:
/// `lowercase=1` is more likely a slip than a choice, and pyo3's own message names no argument.
pub fn bool_arg(obj: Option<&Bound<'_, PyAny>>, arg: &str, default: bool) -> PyResult<bool> {
    match obj {
        None => Ok(default),
        Some(o) => o
            .cast::<PyBool>()
            .map(|b| b.is_true())
            .map_err(|_| type_error(arg, "bool", &type_name(o))),
    }
}

/// A finite real number (an int or a float, never a bool), as f64.
pub fn f64_arg(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<f64> {
    if obj.is_instance_of::<PyBool>() {
        return Err(type_error(arg, "a number", "bool"));
    }
    let v: f64 = obj
        .extract()
        .map_err(|_| type_error(arg, "a number", &type_name(obj)))?;
    if !v.is_finite() {
        return Err(value_error(arg, format!("must be finite, got {v}")));
    }
    Ok(v)
}

fn int_counts<T>(values: impl Iterator<Item = T>, name: &str) -> PyResult<Vec<usize>>
where
    T: Copy + std::fmt::Display,
    usize: TryFrom<T>,
{
    values
        .enumerate()
        .map(|(i, v)| {
            usize::try_from(v).map_err(|_| value_error(&format!("{name}[{i}]"), format!("must be >= 0, got {v}")))
        })
        .collect()
}
