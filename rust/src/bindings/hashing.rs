use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rayon::prelude::*;

use super::errors::{to_py, type_error, value_error};
use super::extract::{
    as_str, bool_arg, borrow_strs, counts_arg, f64_arg, non_empty, str_objects, type_name, usize_arg,
};
use super::threads;
use crate::core::hashing::{self, HasherConfig, Norm};
use crate::core::matching::{self, Bm25Index, MatchConfig, MATCH_FEATURE_NAMES};

/// An n-gram range argument as passed. pyo3 hands an explicit `None` to an `Option` parameter as
/// `Option::None`, exactly like an omitted argument, but here `None` means "disabled" while omission
/// means "the default", so omission needs a value of its own.
enum NgramArg<'py> {
    Omitted,
    Given(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for NgramArg<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(NgramArg::Given(obj.to_owned()))
    }
}

fn ngram_arg(obj: NgramArg<'_>, arg: &str, default: Option<(usize, usize)>) -> PyResult<Option<(usize, usize)>> {
    let NgramArg::Given(obj) = obj else { return Ok(default) };
    if obj.is_none() {
        return Ok(None);
    }
    let t = obj
        .cast::<PyTuple>()
        .map_err(|_| type_error(arg, "a (min, max) tuple or None", &type_name(&obj)))?;
    if t.len() != 2 {
        return Err(value_error(
            arg,
            format!("expected a (min, max) tuple, got {} elements", t.len()),
        ));
    }
    Ok(Some((
        usize_arg(&t.get_item(0)?, &format!("{arg}[0]"))?,
        usize_arg(&t.get_item(1)?, &format!("{arg}[1]"))?,
    )))
}

/// The owner of a transform's output buffer behind its numpy array. When Python drops the array,
/// the buffer goes back to the hasher's recycler instead of the allocator, so that the next large
/// transform writes into memory that is mapped already (`core::recycle` says why).
#[pyclass(module = "pinrel._native", name = "_OutputBuffer", frozen)]
struct OutputBuffer {
    buf: Output,
}

enum Output {
    I32(Vec<i32>),
    F32(Vec<f32>),
}

/// A numpy array over `v`, which stays owned by an [`OutputBuffer`] (the array's base).
fn output_array<'py, T: numpy::Element>(
    py: Python<'py>,
    v: Vec<T>,
    wrap: fn(Vec<T>) -> Output,
) -> PyResult<Bound<'py, PyArray1<T>>> {
    // Moving the Vec into the owner leaves its heap buffer where it is.
    let (ptr, len) = (v.as_ptr(), v.len());
    let owner = Bound::new(py, OutputBuffer { buf: wrap(v) })?;
    // SAFETY: `ptr..ptr + len` is the owner's initialised buffer, and `owner` becomes the array's
    // base, so it outlives the array; the buffer is neither read nor moved on the Rust side until
    // `owner` is dropped (a frozen class without methods).
    unsafe {
        let view = numpy::ndarray::ArrayView1::from_shape_ptr(len, ptr);
        Ok(PyArray1::borrow_from_array(&view, owner.into_any()))
    }
}

impl Drop for OutputBuffer {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.buf, Output::I32(Vec::new())) {
            Output::I32(v) => hashing::OUTPUT_BUFFERS.indices.give(v),
            Output::F32(v) => hashing::OUTPUT_BUFFERS.values.give(v),
        }
    }
}

/// The compiled hasher. `pinrel.FeatureHasher` wraps it to return scipy matrices.
#[pyclass(module = "pinrel._native", name = "FeatureHasher", frozen)]
pub struct PyFeatureHasher {
    cfg: HasherConfig,
    matching: MatchConfig,
}

#[pymethods]
impl PyFeatureHasher {
    #[new]
    #[pyo3(signature = (n_features = None, word_ngrams = NgramArg::Omitted, char_ngrams = NgramArg::Omitted, seed = None, signed = None,
        norm = "l2", lowercase = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        n_features: Option<&Bound<'_, PyAny>>,
        word_ngrams: NgramArg<'_>,
        char_ngrams: NgramArg<'_>,
        seed: Option<&Bound<'_, PyAny>>,
        signed: Option<&Bound<'_, PyAny>>,
        norm: Option<&str>,
        lowercase: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let signed = bool_arg(signed, "signed", true)?;
        let lowercase = bool_arg(lowercase, "lowercase", true)?;
        let d = HasherConfig::default();
        let n_features = match n_features {
            Some(v) => {
                let n = usize_arg(v, "n_features")?;
                u32::try_from(n).map_err(|_| value_error("n_features", format!("must be <= 2**31 - 1, got {n}")))?
            }
            None => d.n_features,
        };
        let seed = match seed {
            Some(v) => {
                let s = usize_arg(v, "seed")?;
                u64::try_from(s).map_err(|_| value_error("seed", "must fit in 64 bits"))?
            }
            None => d.seed,
        };
        let norm = match norm {
            None => Norm::None,
            Some(name) => Norm::from_name(name)
                .ok_or_else(|| value_error("norm", format!("expected 'l1', 'l2' or None, got {name:?}")))?,
        };
        let cfg = HasherConfig {
            n_features,
            word_ngrams: ngram_arg(word_ngrams, "word_ngrams", d.word_ngrams)?,
            char_ngrams: ngram_arg(char_ngrams, "char_ngrams", d.char_ngrams)?,
            seed,
            signed,
            norm,
            lowercase,
        };
        cfg.validate().map_err(to_py)?;
        let matching = MatchConfig {
            lowercase,
            ..MatchConfig::default()
        };
        Ok(PyFeatureHasher { cfg, matching })
    }

    #[getter]
    fn n_features(&self) -> u32 {
        self.cfg.n_features
    }
    #[getter]
    fn word_ngrams(&self) -> Option<(usize, usize)> {
        self.cfg.word_ngrams
    }
    #[getter]
    fn char_ngrams(&self) -> Option<(usize, usize)> {
        self.cfg.char_ngrams
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.cfg.seed
    }
    #[getter]
    fn signed(&self) -> bool {
        self.cfg.signed
    }
    #[getter]
    fn norm(&self) -> Option<&'static str> {
        match self.cfg.norm {
            Norm::None => None,
            n => Some(n.name()),
        }
    }
    #[getter]
    fn lowercase(&self) -> bool {
        self.cfg.lowercase
    }

    /// CSR parts `(data, indices, indptr)`; the numpy arrays own the Rust buffers (no copy).
    #[allow(clippy::type_complexity)]
    fn transform_csr<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray1<i32>>,
        Bound<'py, PyArray1<i64>>,
    )> {
        let objs = non_empty(str_objects(texts, "texts")?, "texts")?;
        let strs = borrow_strs(&objs, "texts")?;
        let csr = py.detach(|| threads::install(|| hashing::transform(&strs, &self.cfg)));
        Ok((
            output_array(py, csr.data, Output::F32)?,
            output_array(py, csr.indices, Output::I32)?,
            csr.indptr.into_pyarray(py),
        ))
    }

    fn transform_pairs<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let q_objs = non_empty(str_objects(queries, "queries")?, "queries")?;
        let t_objs = str_objects(texts, "texts")?;
        if q_objs.len() != t_objs.len() {
            return Err(value_error(
                "queries",
                format!("has {} entries but texts has {}", q_objs.len(), t_objs.len()),
            ));
        }
        let qs = borrow_strs(&q_objs, "queries")?;
        let ts = borrow_strs(&t_objs, "texts")?;
        let n = qs.len();
        let feats = py.detach(|| threads::install(|| matching::transform_pairs(&qs, &ts, &self.matching)));
        feats.into_pyarray(py).reshape([n, MATCH_FEATURE_NAMES.len()])
    }

    fn feature_index(&self, kind: &Bound<'_, PyAny>, token: &Bound<'_, PyAny>) -> PyResult<(u32, f32)> {
        let kind = match as_str(kind, "kind")? {
            "word" => b'w',
            "char" => b'c',
            other => return Err(value_error("kind", format!("expected 'word' or 'char', got {other:?}"))),
        };
        Ok(hashing::feature_index(kind, as_str(token, "token")?, &self.cfg))
    }
}

#[pyfunction]
#[pyo3(signature = (text, lowercase = None))]
fn words(text: &Bound<'_, PyAny>, lowercase: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    Ok(hashing::words(
        as_str(text, "text")?,
        bool_arg(lowercase, "lowercase", true)?,
    ))
}

/// `(doc_ids, scores)`, both `[n_queries, k]`.
type TopK<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// BM25 over a fixed corpus: retrieval for candidate generation and the BM25 baseline.
#[pyclass(module = "pinrel._native", name = "Bm25Index", frozen)]
pub struct PyBm25Index {
    index: Bm25Index,
}

#[pymethods]
impl PyBm25Index {
    #[new]
    #[pyo3(signature = (docs, k1 = None, b = None, lowercase = None))]
    fn new(
        py: Python<'_>,
        docs: &Bound<'_, PyAny>,
        k1: Option<&Bound<'_, PyAny>>,
        b: Option<&Bound<'_, PyAny>>,
        lowercase: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let k1 = k1.map_or(Ok(1.2), |v| f64_arg(v, "k1"))?;
        if !(0.0..=f64::from(f32::MAX)).contains(&k1) {
            return Err(value_error("k1", format!("must be >= 0 and fit in float32, got {k1}")));
        }
        let b = b.map_or(Ok(0.75), |v| f64_arg(v, "b"))?;
        if !(0.0..=1.0).contains(&b) {
            return Err(value_error("b", format!("must be in [0, 1], got {b}")));
        }
        let (k1, b) = (k1 as f32, b as f32);
        let lowercase = bool_arg(lowercase, "lowercase", true)?;
        let objs = non_empty(str_objects(docs, "docs")?, "docs")?;
        let strs = borrow_strs(&objs, "docs")?;
        let index = py.detach(|| threads::install(|| Bm25Index::build(&strs, k1, b, lowercase)));
        Ok(PyBm25Index { index })
    }

    fn __len__(&self) -> usize {
        self.index.n_docs()
    }

    /// Scores of `queries[i]` against document `doc_ids[i]`.
    fn score<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        doc_ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let q_objs = str_objects(queries, "queries")?;
        let qs = borrow_strs(&q_objs, "queries")?;
        let ids = counts_arg(doc_ids, "doc_ids")?;
        if ids.len() != qs.len() {
            return Err(value_error(
                "doc_ids",
                format!("has {} entries but queries has {}", ids.len(), qs.len()),
            ));
        }
        let n = self.index.n_docs();
        if let Some((i, &d)) = ids.iter().enumerate().find(|(_, &d)| d >= n) {
            return Err(value_error(
                &format!("doc_ids[{i}]"),
                format!("{d} is out of range for {n} documents"),
            ));
        }
        let out: Vec<f32> = py.detach(|| {
            threads::install(|| {
                qs.par_iter()
                    .zip(ids.par_iter())
                    .map(|(q, &d)| self.index.score(q, d))
                    .collect()
            })
        });
        Ok(out.into_pyarray(py))
    }

    /// Top-k documents per query as `(doc_ids, scores)`, each `[n_queries, k]`; -1 pads short lists.
    fn top_k<'py>(&self, py: Python<'py>, queries: &Bound<'py, PyAny>, k: &Bound<'py, PyAny>) -> PyResult<TopK<'py>> {
        let k = usize_arg(k, "k")?;
        let n = self.index.n_docs();
        // A row holds at most the index's documents; a larger k would only add padding.
        if k == 0 || k > n {
            return Err(value_error(
                "k",
                format!("must be in 1..={n} (the index's documents), got {k}"),
            ));
        }
        let q_objs = str_objects(queries, "queries")?;
        let qs = borrow_strs(&q_objs, "queries")?;
        let nq = qs.len();
        // Reserved up front, so that a result too large for memory raises instead of aborting.
        let too_large = || PyMemoryError::new_err(format!("k: {nq} queries x k={k} results do not fit in memory"));
        let cells = nq.checked_mul(k).ok_or_else(too_large)?;
        let mut ids = filled(cells, -1i64).ok_or_else(too_large)?;
        let mut scores = filled(cells, 0f32).ok_or_else(too_large)?;
        py.detach(|| {
            threads::install(|| {
                let rows: Vec<Vec<(usize, f32)>> = qs.par_iter().map(|q| self.index.top_k(q, k)).collect();
                for (r, row) in rows.iter().enumerate() {
                    for (j, &(d, s)) in row.iter().enumerate() {
                        ids[r * k + j] = d as i64;
                        scores[r * k + j] = s;
                    }
                }
            })
        });
        Ok((
            ids.into_pyarray(py).reshape([nq, k])?,
            scores.into_pyarray(py).reshape([nq, k])?,
        ))
    }
}

/// `len` copies of `value`, or None when the memory cannot be had.
fn filled<T: Clone>(len: usize, value: T) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, value);
    Some(v)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFeatureHasher>()?;
    m.add_class::<PyBm25Index>()?;
    m.add_function(wrap_pyfunction!(words, m)?)?;
    m.add("MATCH_FEATURE_NAMES", MATCH_FEATURE_NAMES.to_vec())?;
    Ok(())
}
