//! Request parameters: the GET form (`Filters.0.Name=zone`) and lenient scalars.
//!
//! The official clients are not consistent about scalar types: tccli sends the
//! VPC `Offset`/`Limit` as JSON strings because api.json declares them strings,
//! and a GET request carries every value as text (`DryRun=True`). The server
//! therefore turns a flattened query into the same JSON tree a POST would carry
//! ([`unflatten`]) and decodes scalars with the lenient helpers in [`lenient`],
//! which accept a number or its decimal string and `true`/`True`/`false`/`False`.

use serde_json::{Map, Value};

/// Limits that keep a hostile query from costing us memory or time.
const MAX_PARAMS: usize = 2_000;
const MAX_DEPTH: usize = 8;
const MAX_INDEX: usize = 10_000;

/// Why a flattened parameter list could not be turned into a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlattenError {
    /// Too many parameters.
    #[error("too many parameters (at most {MAX_PARAMS})")]
    TooMany,
    /// A key nests deeper than we accept.
    #[error("parameter `{0}` nests too deeply")]
    TooDeep(String),
    /// A key is empty or has an empty segment (`Filters..Name`).
    #[error("parameter name `{0}` is malformed")]
    Malformed(String),
    /// `a=1&a.b=2`: a value and a structure under the same name.
    #[error("parameter `{0}` is given both as a value and as a structure")]
    Conflict(String),
    /// A list index out of range.
    #[error("parameter `{0}` has a list index that is too large")]
    Index(String),
}

/// Flattens a JSON tree the way the SDK builds a GET query: `a.b.0.c = value`.
pub fn flatten(value: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, &join(k), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &join(&i.to_string()), out)),
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            Value::Bool(b) => out.push((
                prefix.to_string(),
                if *b { "True" } else { "False" }.to_string(),
            )),
            Value::Null => {}
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

#[derive(Debug)]
enum Node {
    Leaf(String),
    Branch(Vec<(String, Node)>),
}

/// Builds the JSON tree of a flattened parameter list. Segments that are all
/// decimal digits become list indexes (0-based, sorted; gaps close up).
pub fn unflatten(pairs: &[(String, String)]) -> Result<Value, FlattenError> {
    if pairs.len() > MAX_PARAMS {
        return Err(FlattenError::TooMany);
    }
    let mut root = Node::Branch(Vec::new());
    for (key, value) in pairs {
        let segments: Vec<&str> = key.split('.').collect();
        if key.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return Err(FlattenError::Malformed(key.clone()));
        }
        if segments.len() > MAX_DEPTH {
            return Err(FlattenError::TooDeep(key.clone()));
        }
        let mut node = &mut root;
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let Node::Branch(children) = node else {
                return Err(FlattenError::Conflict(key.clone()));
            };
            let pos = children.iter().position(|(k, _)| k == seg);
            let pos = match pos {
                Some(p) => p,
                None => {
                    children.push((
                        seg.to_string(),
                        if last {
                            Node::Leaf(String::new())
                        } else {
                            Node::Branch(Vec::new())
                        },
                    ));
                    children.len() - 1
                }
            };
            let child = &mut children[pos].1;
            if last {
                match child {
                    Node::Leaf(v) => *v = value.clone(),
                    Node::Branch(_) => return Err(FlattenError::Conflict(key.clone())),
                }
            }
            node = child;
        }
    }
    to_value(root, "")
}

fn to_value(node: Node, path: &str) -> Result<Value, FlattenError> {
    match node {
        Node::Leaf(s) => Ok(Value::String(s)),
        Node::Branch(children) => {
            let numeric = !children.is_empty()
                && children
                    .iter()
                    .all(|(k, _)| k.bytes().all(|b| b.is_ascii_digit()));
            if numeric {
                let mut indexed = Vec::with_capacity(children.len());
                for (k, v) in children {
                    let idx: usize = k
                        .parse()
                        .ok()
                        .filter(|i| *i <= MAX_INDEX)
                        .ok_or_else(|| FlattenError::Index(format!("{path}.{k}")))?;
                    indexed.push((idx, v));
                }
                indexed.sort_by_key(|(i, _)| *i);
                let items = indexed
                    .into_iter()
                    .map(|(i, v)| to_value(v, &format!("{path}.{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::Array(items))
            } else {
                let mut map = Map::new();
                for (k, v) in children {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    map.insert(k, to_value(v, &p)?);
                }
                Ok(Value::Object(map))
            }
        }
    }
}

/// Lenient scalar decoders for `#[serde(deserialize_with = …)]`.
pub mod lenient {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    struct I64Visitor;
    impl Visitor<'_> for I64Visitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(de::Unexpected::Float(v), &self))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    struct F64Visitor;
    impl Visitor<'_> for F64Visitor {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    struct BoolVisitor;
    impl Visitor<'_> for BoolVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean (true or false)")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            self.visit_i64(v as i64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "true" | "True" | "TRUE" | "1" => Ok(true),
                "false" | "False" | "FALSE" | "0" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }

    struct StringVisitor;
    impl Visitor<'_> for StringVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    /// A required integer.
    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(I64Visitor)
    }

    /// An optional integer (JSON `null` is absent).
    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_option(OptVisitor(I64Visitor))
    }

    /// An optional float.
    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_option(OptVisitor(F64Visitor))
    }

    /// An optional boolean.
    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        d.deserialize_option(OptVisitor(BoolVisitor))
    }

    /// An optional string that also takes a number or boolean literally.
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(OptVisitor(StringVisitor))
    }

    /// An optional list of integers.
    pub fn opt_vec_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<i64>>, D::Error> {
        #[derive(serde::Deserialize)]
        struct W(#[serde(deserialize_with = "i64")] i64);
        let v: Option<Vec<W>> = serde::Deserialize::deserialize(d)?;
        Ok(v.map(|v| v.into_iter().map(|W(x)| x).collect()))
    }

    struct OptVisitor<V>(V);
    impl<'de, V: Visitor<'de> + Copy> Visitor<'de> for OptVisitor<V> {
        type Value = Option<V::Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self.0).map(Some)
        }
    }

    impl Clone for I64Visitor {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl Copy for I64Visitor {}
    impl Clone for F64Visitor {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl Copy for F64Visitor {}
    impl Clone for BoolVisitor {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl Copy for BoolVisitor {}
    impl Clone for StringVisitor {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl Copy for StringVisitor {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unflattens_sdk_get_query() {
        let v = unflatten(&pairs(&[
            ("Filters.0.Name", "zone"),
            ("Filters.0.Values.0", "ap-guangzhou-3"),
            ("Filters.1.Name", "instance-state"),
            ("Filters.1.Values.0", "RUNNING"),
            ("Filters.1.Values.1", "STOPPED"),
            ("Limit", "20"),
        ]))
        .unwrap();
        assert_eq!(
            v,
            json!({"Filters": [{"Name": "zone", "Values": ["ap-guangzhou-3"]},
                               {"Name": "instance-state", "Values": ["RUNNING", "STOPPED"]}],
                   "Limit": "20"})
        );
    }

    #[test]
    fn flatten_round_trips() {
        let v = json!({"Placement": {"Zone": "z"}, "InstanceIds": ["a", "b"], "DryRun": true, "Limit": 5});
        let back = unflatten(&flatten(&v)).unwrap();
        assert_eq!(
            back,
            json!({"Placement": {"Zone": "z"}, "InstanceIds": ["a", "b"], "DryRun": "True", "Limit": "5"})
        );
    }

    #[test]
    fn rejects_conflicts_and_garbage() {
        assert!(matches!(
            unflatten(&pairs(&[("a", "1"), ("a.b", "2")])),
            Err(FlattenError::Conflict(_))
        ));
        assert!(matches!(
            unflatten(&pairs(&[("a.b", "2"), ("a", "1")])),
            Err(FlattenError::Conflict(_))
        ));
        assert!(matches!(
            unflatten(&pairs(&[("a..b", "1")])),
            Err(FlattenError::Malformed(_))
        ));
        assert!(matches!(
            unflatten(&pairs(&[("a.99999999999999999999", "1")])),
            Err(FlattenError::Index(_))
        ));
    }

    #[derive(serde::Deserialize, Debug)]
    struct Lenient {
        #[serde(default, deserialize_with = "lenient::opt_i64")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "lenient::opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "lenient::opt_f64")]
        f: Option<f64>,
    }

    #[test]
    fn lenient_scalars() {
        let l: Lenient =
            serde_json::from_value(json!({"n": "10", "b": "True", "f": "1.5"})).unwrap();
        assert_eq!((l.n, l.b, l.f), (Some(10), Some(true), Some(1.5)));
        let l: Lenient = serde_json::from_value(json!({"n": 10, "b": false, "f": null})).unwrap();
        assert_eq!((l.n, l.b, l.f), (Some(10), Some(false), None));
        assert!(serde_json::from_value::<Lenient>(json!({"n": "ten"})).is_err());
        assert!(serde_json::from_value::<Lenient>(json!({"n": 1.5})).is_err());
        assert!(serde_json::from_value::<Lenient>(json!({"b": "yes"})).is_err());
    }

    proptest::proptest! {
        #[test]
        fn unflatten_never_panics(keys in proptest::collection::vec(("[A-Za-z0-9.]{0,12}", ".{0,4}"), 0..20)) {
            let _ = unflatten(&keys);
        }
    }
}
