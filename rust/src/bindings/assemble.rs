use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rayon::prelude::*;

use super::errors::{to_py, type_error, value_error};
use super::extract::{
    as_str, borrow_strs, non_empty, opt_str, opt_str_list, sequence, str_objects, type_name, usize_arg,
};
use super::threads;
use crate::core::assemble::{self as core_assemble, Field, Item, Spec};

/// How an item becomes text. Immutable, so one spec can be shared by threads and saved with a model.
#[pyclass(module = "pinrel._native", name = "AssemblySpec", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyAssemblySpec {
    pub inner: Spec,
}

const SPEC_KEYS: [&str; 10] = [
    "fields",
    "labels",
    "separator",
    "list_separator",
    "max_chars",
    "field_max_chars",
    "query_label",
    "pair_separator",
    "max_query_chars",
    "include_lang",
];

fn field_arg(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<Field> {
    let name = as_str(obj, arg)?;
    Field::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        value_error(
            arg,
            format!("unknown field {name:?}; known fields: {}", known.join(", ")),
        )
    })
}

fn dict_arg<'py>(obj: &Bound<'py, PyAny>, arg: &str) -> PyResult<Bound<'py, PyDict>> {
    obj.cast::<PyDict>()
        .cloned()
        .map_err(|_| type_error(arg, "dict", &type_name(obj)))
}

#[pymethods]
impl PyAssemblySpec {
    #[new]
    #[pyo3(signature = (*, fields=None, labels=None, separator=None, list_separator=None, max_chars=None,
        field_max_chars=None, query_label=None, pair_separator=None, max_query_chars=None, include_lang=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fields: Option<Bound<'_, PyAny>>,
        labels: Option<Bound<'_, PyAny>>,
        separator: Option<Bound<'_, PyAny>>,
        list_separator: Option<Bound<'_, PyAny>>,
        max_chars: Option<Bound<'_, PyAny>>,
        field_max_chars: Option<Bound<'_, PyAny>>,
        query_label: Option<Bound<'_, PyAny>>,
        pair_separator: Option<Bound<'_, PyAny>>,
        max_query_chars: Option<Bound<'_, PyAny>>,
        include_lang: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut spec = Spec::default();
        if let Some(fields) = fields.filter(|f| !f.is_none()) {
            spec.fields = sequence(&fields, "fields")?
                .iter()
                .enumerate()
                .map(|(i, f)| field_arg(f, &format!("fields[{i}]")))
                .collect::<PyResult<_>>()?;
        }
        if let Some(labels) = labels.filter(|l| !l.is_none()) {
            for (k, v) in dict_arg(&labels, "labels")?.iter() {
                let field = field_arg(&k, "labels key")?;
                let label = as_str(&v, &format!("labels[{:?}]", field.name()))?.to_owned();
                spec.labels.retain(|(f, _)| *f != field);
                spec.labels.push((field, label));
            }
        }
        if let Some(caps) = field_max_chars.filter(|c| !c.is_none()) {
            for (k, v) in dict_arg(&caps, "field_max_chars")?.iter() {
                let field = field_arg(&k, "field_max_chars key")?;
                let cap = usize_arg(&v, &format!("field_max_chars[{:?}]", field.name()))?;
                spec.field_max_chars.retain(|(f, _)| *f != field);
                spec.field_max_chars.push((field, cap));
            }
        }
        let set_str = |target: &mut String, obj: Option<Bound<'_, PyAny>>, arg: &str| -> PyResult<()> {
            if let Some(v) = opt_str(obj, || arg.to_owned())? {
                *target = v;
            }
            Ok(())
        };
        set_str(&mut spec.separator, separator, "separator")?;
        set_str(&mut spec.list_separator, list_separator, "list_separator")?;
        set_str(&mut spec.query_label, query_label, "query_label")?;
        set_str(&mut spec.pair_separator, pair_separator, "pair_separator")?;
        if let Some(v) = max_chars.filter(|v| !v.is_none()) {
            spec.max_chars = usize_arg(&v, "max_chars")?;
        }
        if let Some(v) = max_query_chars.filter(|v| !v.is_none()) {
            spec.max_query_chars = usize_arg(&v, "max_query_chars")?;
        }
        if let Some(v) = include_lang.filter(|v| !v.is_none()) {
            spec.include_lang = v
                .cast::<pyo3::types::PyBool>()
                .map_err(|_| type_error("include_lang", "bool", &type_name(&v)))?
                .is_true();
        }
        // One canonical order for overrides, so that equality (and with it a to_dict/from_dict round
        // trip) does not depend on the order in which labels or caps were given.
        spec.labels = Field::ALL.iter().map(|&f| (f, spec.label(f).to_owned())).collect();
        spec.field_max_chars = Field::ALL.iter().map(|&f| (f, spec.field_cap(f))).collect();
        spec.validate().map_err(to_py)?;
        Ok(PyAssemblySpec { inner: spec })
    }

    /// Rebuild a spec from `to_dict()` output; unknown keys are an error so a typo is never ignored.
    #[staticmethod]
    fn from_dict(py: Python<'_>, d: &Bound<'_, PyAny>) -> PyResult<Self> {
        let d = dict_arg(d, "spec")?;
        for key in d.keys().iter() {
            let k = as_str(&key, "spec key")?;
            if !SPEC_KEYS.contains(&k) {
                return Err(value_error(
                    "spec",
                    format!("unknown key {k:?}; known keys: {}", SPEC_KEYS.join(", ")),
                ));
            }
        }
        let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> { d.get_item(k) };
        let _ = py;
        Self::new(
            get("fields")?,
            get("labels")?,
            get("separator")?,
            get("list_separator")?,
            get("max_chars")?,
            get("field_max_chars")?,
            get("query_label")?,
            get("pair_separator")?,
            get("max_query_chars")?,
            get("include_lang")?,
        )
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner;
        let d = PyDict::new(py);
        d.set_item("fields", s.fields.iter().map(|f| f.name()).collect::<Vec<_>>())?;
        let labels = PyDict::new(py);
        let caps = PyDict::new(py);
        for f in Field::ALL {
            labels.set_item(f.name(), s.label(f))?;
            caps.set_item(f.name(), s.field_cap(f))?;
        }
        d.set_item("labels", labels)?;
        d.set_item("separator", &s.separator)?;
        d.set_item("list_separator", &s.list_separator)?;
        d.set_item("max_chars", s.max_chars)?;
        d.set_item("field_max_chars", caps)?;
        d.set_item("query_label", &s.query_label)?;
        d.set_item("pair_separator", &s.pair_separator)?;
        d.set_item("max_query_chars", s.max_query_chars)?;
        d.set_item("include_lang", s.include_lang)?;
        Ok(d)
    }

    #[getter]
    fn fields(&self) -> Vec<&'static str> {
        self.inner.fields.iter().map(|f| f.name()).collect()
    }
    #[getter]
    fn max_chars(&self) -> usize {
        self.inner.max_chars
    }
    #[getter]
    fn max_query_chars(&self) -> usize {
        self.inner.max_query_chars
    }
    #[getter]
    fn separator(&self) -> &str {
        &self.inner.separator
    }
    #[getter]
    fn pair_separator(&self) -> &str {
        &self.inner.pair_separator
    }

    fn __repr__(&self) -> String {
        let s = &self.inner;
        format!(
            "AssemblySpec(fields={:?}, max_chars={}, max_query_chars={}, separator={:?})",
            s.fields.iter().map(|f| f.name()).collect::<Vec<_>>(),
            s.max_chars,
            s.max_query_chars,
            s.separator
        )
    }
}

fn spec_or_default(spec: Option<&Bound<'_, PyAny>>) -> PyResult<Spec> {
    match spec {
        None => Ok(Spec::default()),
        Some(s) if s.is_none() => Ok(Spec::default()),
        Some(s) => Ok(s
            .cast::<PyAssemblySpec>()
            .map_err(|_| type_error("spec", "AssemblySpec or None", &type_name(s)))?
            .get()
            .inner
            .clone()),
    }
}

fn item_from_dict(d: &Bound<'_, PyDict>, i: usize) -> PyResult<Item> {
    let py = d.py();
    let arg = |f: &'static str| move || format!("items[{i}][{f:?}]");
    // Interned keys: building eight Python strings per item was a visible share of assembly time.
    Ok(Item {
        title: opt_str(d.get_item(intern!(py, "title"))?, arg("title"))?,
        description: opt_str(d.get_item(intern!(py, "description"))?, arg("description"))?,
        captions: opt_str_list(d.get_item(intern!(py, "captions"))?, arg("captions"))?,
        boards: opt_str_list(d.get_item(intern!(py, "boards"))?, arg("boards"))?,
        queries: opt_str_list(d.get_item(intern!(py, "queries"))?, arg("queries"))?,
        link_title: opt_str(d.get_item(intern!(py, "link_title"))?, arg("link_title"))?,
        link_description: opt_str(d.get_item(intern!(py, "link_description"))?, arg("link_description"))?,
        lang: opt_str(d.get_item(intern!(py, "lang"))?, arg("lang"))?,
    })
}

/// Items from a list of dicts, or from a dict of equal-length columns (what the Python layer makes
/// of a pyarrow Table, so that Arrow data never has to be turned into per-row dicts).
fn items_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Item>> {
    if let Ok(columns) = obj.cast::<PyDict>() {
        return items_from_columns(columns);
    }
    let rows = non_empty(sequence(obj, "items")?, "items")?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let d = row
                .cast::<PyDict>()
                .map_err(|_| type_error(&format!("items[{i}]"), "dict", &type_name(row)))?;
            item_from_dict(d, i)
        })
        .collect()
}

fn items_from_columns(columns: &Bound<'_, PyDict>) -> PyResult<Vec<Item>> {
    let mut n: Option<usize> = None;
    let mut cols: Vec<(String, Vec<Bound<'_, PyAny>>)> = Vec::new();
    for (k, v) in columns.iter() {
        let name = as_str(&k, "items column")?.to_owned();
        if name != "lang" && Field::from_name(&name).is_none() {
            continue; // ids, labels and other columns travel alongside item fields
        }
        let values = sequence(&v, &format!("items[{name:?}]"))?;
        match n {
            Some(len) if len != values.len() => {
                return Err(value_error(
                    "items",
                    format!("column {name:?} has {} rows, expected {len}", values.len()),
                ))
            }
            _ => n = Some(values.len()),
        }
        cols.push((name, values));
    }
    let n = n.ok_or_else(|| value_error("items", "no item field among the columns; expected some of title, description, captions, boards, queries, link_title, link_description"))?;
    if n == 0 {
        return Err(value_error("items", "must not be empty"));
    }
    let mut items = vec![Item::default(); n];
    for (name, values) in &cols {
        for (i, v) in values.iter().enumerate() {
            let arg = || format!("items[{i}][{name:?}]");
            let v = Some(v.clone());
            let it = &mut items[i];
            match name.as_str() {
                "title" => it.title = opt_str(v, arg)?,
                "description" => it.description = opt_str(v, arg)?,
                "captions" => it.captions = opt_str_list(v, arg)?,
                "boards" => it.boards = opt_str_list(v, arg)?,
                "queries" => it.queries = opt_str_list(v, arg)?,
                "link_title" => it.link_title = opt_str(v, arg)?,
                "link_description" => it.link_description = opt_str(v, arg)?,
                "lang" => it.lang = opt_str(v, arg)?,
                _ => unreachable!("filtered above"),
            }
        }
    }
    Ok(items)
}

#[pyfunction]
#[pyo3(signature = (items, spec = None))]
fn assemble(py: Python<'_>, items: &Bound<'_, PyAny>, spec: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let spec = spec_or_default(spec)?;
    let items = items_arg(items)?;
    Ok(py.detach(|| threads::install(|| items.par_iter().map(|it| core_assemble::assemble(it, &spec)).collect())))
}

#[pyfunction]
#[pyo3(signature = (queries, items, spec = None))]
fn assemble_pairs(
    py: Python<'_>,
    queries: &Bound<'_, PyAny>,
    items: &Bound<'_, PyAny>,
    spec: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<String>> {
    let spec = spec_or_default(spec)?;
    let query_objs = non_empty(str_objects(queries, "queries")?, "queries")?;
    let queries = borrow_strs(&query_objs, "queries")?;
    let items = items_arg(items)?;
    if queries.len() != items.len() {
        return Err(value_error(
            "queries",
            format!(
                "has {} entries but items has {}; pairs need one query per item",
                queries.len(),
                items.len()
            ),
        ));
    }
    Ok(py.detach(|| {
        threads::install(|| {
            queries
                .par_iter()
                .zip(items.par_iter())
                .map(|(q, it)| core_assemble::assemble_pair(q, it, &spec))
                .collect()
        })
    }))
}

#[pyfunction]
fn clean_text(py: Python<'_>, texts: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    if texts.is_instance_of::<PyString>() {
        let s = as_str(texts, "texts")?;
        return Ok(PyString::new(py, &crate::core::text::clean_text(s)).into_any().unbind());
    }
    let objs = non_empty(str_objects(texts, "texts")?, "texts")?;
    let strs = borrow_strs(&objs, "texts")?;
    let out: Vec<String> =
        py.detach(|| threads::install(|| strs.par_iter().map(|s| crate::core::text::clean_text(s)).collect()));
    Ok(PyList::new(py, out)?.into_any().unbind())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAssemblySpec>()?;
    m.add_function(wrap_pyfunction!(assemble, m)?)?;
    m.add_function(wrap_pyfunction!(assemble_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(clean_text, m)?)?;
    m.add("ITEM_FIELDS", Field::ALL.iter().map(|f| f.name()).collect::<Vec<_>>())?;
    Ok(())
}
