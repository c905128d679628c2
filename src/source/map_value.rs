//! `map_value(map, key)`: the value of `key` in a `MAP<STRING, STRING>` row, or NULL: the
//! embedded engine's lookup of the cost-center tag.
//!
//! DataFusion's `element_at(map, key)` builds a list of every match for each row and the query
//! then takes its first element; this scans the row's keys and copies the one value out, which
//! is what the allocation needs of the `tags` map (measured in `benches/perf.rs`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayAccessor, ArrayRef, AsArray, MapArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

/// The function's name in SQL.
pub const NAME: &str = crate::allocation::sql::MAP_VALUE;

/// `map_value` as a DataFusion function, to register on a session.
pub fn udf() -> ScalarUDF {
    ScalarUDF::from(MapValue {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct MapValue {
    signature: Signature,
}

impl ScalarUDFImpl for MapValue {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::Map(_, _)) => Ok(DataType::Utf8),
            other => exec_err!("{NAME}: the first argument must be a map, not {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let key = match args.args.get(1) {
            Some(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(k))
                | ScalarValue::Utf8View(Some(k))
                | ScalarValue::LargeUtf8(Some(k)),
            )) => k.clone(),
            other => return exec_err!("{NAME}: the key must be a constant string, not {other:?}"),
        };
        let map: ArrayRef = match args.args.first() {
            Some(ColumnarValue::Array(a)) => a.clone(),
            Some(ColumnarValue::Scalar(s)) => s.to_array_of_size(args.number_rows)?,
            None => return exec_err!("{NAME}: two arguments expected"),
        };
        let Some(map) = map.as_map_opt() else {
            return exec_err!("{NAME}: the first argument must be a map");
        };
        let out = match (map.keys().data_type(), map.values().data_type()) {
            (DataType::Utf8, DataType::Utf8) => lookup(
                map,
                map.keys().as_string::<i32>(),
                map.values().as_string::<i32>(),
                &key,
            ),
            (DataType::Utf8View, DataType::Utf8View) => lookup(
                map,
                map.keys().as_string_view(),
                map.values().as_string_view(),
                &key,
            ),
            (DataType::LargeUtf8, DataType::LargeUtf8) => lookup(
                map,
                map.keys().as_string::<i64>(),
                map.values().as_string::<i64>(),
                &key,
            ),
            (k, v) => return exec_err!("{NAME}: a map of strings expected, not MAP<{k}, {v}>"),
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Per row of `map`, the value of the first entry whose key is `key`.
fn lookup<'a, K, V>(
    map: &MapArray,
    keys: K,
    values: V,
    key: &str,
) -> datafusion::arrow::array::StringArray
where
    K: ArrayAccessor<Item = &'a str>,
    V: ArrayAccessor<Item = &'a str>,
{
    let offsets = map.value_offsets();
    let mut out = StringBuilder::with_capacity(map.len(), map.len() * 8);
    for row in 0..map.len() {
        if map.is_null(row) {
            out.append_null();
            continue;
        }
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        match (start..end).find(|&i| !keys.is_null(i) && keys.value(i) == key) {
            Some(i) if !values.is_null(i) => out.append_value(values.value(i)),
            _ => out.append_null(),
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{MapBuilder, StringArray};
    use datafusion::arrow::datatypes::Field;

    fn tags() -> ArrayRef {
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        // Row 0: the key with a value; row 1: other keys only; row 2: NULL map; row 3: the key
        // with an empty value after another key; row 4: the key with a NULL value.
        b.keys().append_value("userAttribute/costCenter");
        b.values().append_value("CC-1");
        b.append(true).unwrap();
        b.keys().append_value("resourceTags/user:Team");
        b.values().append_value("infra");
        b.append(true).unwrap();
        b.append(false).unwrap();
        b.keys().append_value("resourceTags/user:Team");
        b.values().append_value("x");
        b.keys().append_value("userAttribute/costCenter");
        b.values().append_value("");
        b.append(true).unwrap();
        b.keys().append_value("userAttribute/costCenter");
        b.values().append_null();
        b.append(true).unwrap();
        Arc::new(b.finish())
    }

    #[test]
    fn finds_the_key_in_each_row() {
        let map = tags();
        let f = udf();
        let args = ScalarFunctionArgs {
            arg_fields: vec![
                Arc::new(Field::new("tags", map.data_type().clone(), true)),
                Arc::new(Field::new("key", DataType::Utf8, false)),
            ],
            args: vec![
                ColumnarValue::Array(map.clone()),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some("userAttribute/costCenter".into()))),
            ],
            number_rows: map.len(),
            return_field: Arc::new(Field::new("v", DataType::Utf8, true)),
            config_options: Default::default(),
        };
        let ColumnarValue::Array(out) = f.invoke_with_args(args).unwrap() else {
            panic!("an array")
        };
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(got, vec![Some("CC-1"), None, None, Some(""), None]);
    }
}
