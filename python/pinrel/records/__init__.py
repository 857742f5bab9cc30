"""The one record schema of pinrel: graded (query, item) pairs, and its Parquet/CSV/JSONL readers and writers.

Every loader and every file the CLI reads becomes a `pyarrow.Table` with exactly `SCHEMA`, so the rest of
pinrel never guesses column names, types or missing-value conventions.  Normalisation rules, applied by
`read_records` and `make_records`:

- `query` is required: a null or blank query is an error (a pair without a query trains nothing).
- Item text fields (`title`, ...) are never null: missing becomes "" so assembly needs no null checks.
- List fields (`captions`, `boards`, `queries`) are never null: missing becomes [].  In CSV they are JSON
  arrays; a cell that does not start with "[" is taken as a one-element list.
- `lang`, `query_id`, `item_id` are null when absent; "" counts as absent so CSV round trips are exact.
- `label` is an integer grade 1..K or null (an unlabeled pair).  K travels in the schema metadata under
  `GRADES_KEY` when it is known (Parquet keeps it; CSV and JSONL cannot).
- `weight` is how much a graded pair counts in training (rater agreement, say): a finite number > 0, or
  null, which counts as 1.  Models fitted on records (the teacher, the baselines) honour it.

The package's modules: `schema` (the schema, its errors, shared helpers), `binning` (float scores
to grades), `coerce` (columns into the schema), `readers`, `checks` (validation, digest), `writers`,
`items` (query-disjoint splits, item fields).
"""

from __future__ import annotations

from ..assembly import ITEM_FIELDS, ITEM_TEXT_FIELDS
from .binning import bin_labels, equal_width_edges, parse_label_bins
from .checks import first_bad_weight, records_digest, validate_records
from .items import item_columns, items_of, split_by_query
from .readers import make_records, read_delimited, read_records, read_table
from .schema import (
    DEFAULT_GRADES,
    FORMATS,
    GRADES_KEY,
    ID_FIELDS,
    LIST_FIELDS,
    SCHEMA,
    TEXT_FIELDS,
    RecordsError,
    RecordsFileNotFoundError,
    detect_format,
    is_list_type,
    list_lengths,
    num_grades,
    parse_mapping,
    query_key,
    text_id,
    with_grades,
)
from .writers import write_records

__all__ = [
    "DEFAULT_GRADES",
    "FORMATS",
    "GRADES_KEY",
    "ID_FIELDS",
    "ITEM_FIELDS",
    "ITEM_TEXT_FIELDS",
    "LIST_FIELDS",
    "SCHEMA",
    "TEXT_FIELDS",
    "RecordsError",
    "RecordsFileNotFoundError",
    "bin_labels",
    "detect_format",
    "equal_width_edges",
    "first_bad_weight",
    "is_list_type",
    "item_columns",
    "items_of",
    "list_lengths",
    "make_records",
    "num_grades",
    "parse_label_bins",
    "parse_mapping",
    "query_key",
    "read_delimited",
    "read_records",
    "read_table",
    "records_digest",
    "split_by_query",
    "text_id",
    "validate_records",
    "with_grades",
    "write_records",
]
