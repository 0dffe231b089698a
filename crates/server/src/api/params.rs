//! Validation shared by actions: ID lists, filters, paging.

use gpucloud_api_types::ids::{is_valid, IdKind};
use gpucloud_api_types::Filter;
use gpucloud_core::CloudError;

/// A checked list of IDs of one kind: present (if required), at most `max`,
/// each well formed, duplicates dropped (order kept).
pub fn ids(
    name: &str,
    values: Option<Vec<String>>,
    kind: IdKind,
    required: bool,
    max: usize,
) -> Result<Vec<String>, CloudError> {
    let values = match values {
        Some(v) if !v.is_empty() => v,
        _ if required => return Err(CloudError::MissingParameter(name.to_string())),
        _ => return Ok(vec![]),
    };
    if values.len() > max {
        return Err(CloudError::TooManyValues {
            name: name.to_string(),
            max,
            given: values.len(),
        });
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let v = v.trim().to_string();
        if !is_valid(kind, &v) {
            return Err(malformed(kind, v));
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// The "malformed ID" error of a kind.
pub fn malformed(kind: IdKind, v: String) -> CloudError {
    match kind {
        IdKind::Instance => CloudError::InstanceIdMalformed(v),
        IdKind::Image => CloudError::ImageIdMalformed(v),
        IdKind::KeyPair => CloudError::KeyPairIdMalformed(v),
        IdKind::PlacementGroup => CloudError::PlacementGroupIdMalformed(v),
        other => CloudError::value(other.prefix(), format!("`{v}` is not a valid ID")),
    }
}

/// Checked filters: at most `max_filters`, each with a known name and
/// 1..=`max_values` values. Names matching `tag:<key>` are allowed when
/// `allowed` contains `tag:`.
pub fn filters(
    values: Option<Vec<Filter>>,
    allowed: &[&str],
    max_filters: usize,
    max_values: usize,
) -> Result<Vec<(String, Vec<String>)>, CloudError> {
    let values = values.unwrap_or_default();
    if values.len() > max_filters {
        return Err(CloudError::TooManyValues {
            name: "Filters".into(),
            max: max_filters,
            given: values.len(),
        });
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, f) in values.into_iter().enumerate() {
        let name = f
            .name
            .ok_or_else(|| CloudError::MissingParameter(format!("Filters.{i}.Name")))?;
        let vals = f
            .values
            .ok_or_else(|| CloudError::MissingParameter(format!("Filters.{i}.Values")))?;
        let known = allowed.contains(&name.as_str())
            || (name.starts_with("tag:") && name.len() > 4 && allowed.contains(&"tag:"));
        if !known {
            return Err(CloudError::InvalidFilter {
                name,
                supported: allowed
                    .iter()
                    .map(|a| if *a == "tag:" { "tag:<key>" } else { a })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if vals.is_empty() {
            return Err(CloudError::value(
                format!("Filters.{i}.Values"),
                "give at least one value",
            ));
        }
        if vals.len() > max_values {
            return Err(CloudError::FilterValuesLimit {
                name: format!("Filters.{i}.Values"),
                max: max_values,
                given: vals.len(),
            });
        }
        out.push((name, vals));
    }
    Ok(out)
}

/// Offset (≥ 0, default 0) and Limit (1..=max, default 20).
pub fn paging(offset: Option<i64>, limit: Option<i64>, max: i64) -> Result<(i64, i64), CloudError> {
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(CloudError::Range {
            name: "Offset".into(),
            min: 0,
            max: i64::MAX,
            value: offset,
        });
    }
    let limit = limit.unwrap_or(20);
    if !(1..=max).contains(&limit) {
        return Err(CloudError::Range {
            name: "Limit".into(),
            min: 1,
            max,
            value: limit,
        });
    }
    Ok((offset, limit))
}

/// Values of a filter, or empty.
pub fn values_of<'a>(f: &'a [(String, Vec<String>)], name: &str) -> Vec<&'a String> {
    f.iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.iter())
        .collect()
}

/// Whether `(key, value)` tags match the `tag-key`, `tag-value` and `tag:<key>` filters.
pub fn tags_match(tags: &[(String, String)], f: &[(String, Vec<String>)]) -> bool {
    f.iter().all(|(name, vals)| {
        if name == "tag-key" {
            tags.iter().any(|(k, _)| vals.contains(k))
        } else if name == "tag-value" {
            tags.iter().any(|(_, v)| vals.contains(v))
        } else if let Some(key) = name.strip_prefix("tag:") {
            tags.iter().any(|(k, v)| k == key && vals.contains(v))
        } else {
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists() {
        assert_eq!(
            ids("InstanceIds", None, IdKind::Instance, true, 100),
            Err(CloudError::MissingParameter("InstanceIds".into()))
        );
        assert_eq!(
            ids(
                "InstanceIds",
                Some(vec!["ins-1122".into()]),
                IdKind::Instance,
                true,
                100
            ),
            Err(CloudError::InstanceIdMalformed("ins-1122".into()))
        );
        assert_eq!(
            ids(
                "InstanceIds",
                Some(vec!["ins-aaaaaaaa".into(), "ins-aaaaaaaa".into()]),
                IdKind::Instance,
                true,
                100
            )
            .unwrap(),
            vec!["ins-aaaaaaaa".to_string()]
        );
        assert!(matches!(
            ids(
                "K",
                Some(vec!["skey-aaaaaaaa".into(); 3]),
                IdKind::KeyPair,
                true,
                2
            ),
            Err(CloudError::TooManyValues { .. })
        ));
    }

    #[test]
    fn filter_rules() {
        let f = |n: &str, v: Vec<&str>| Filter {
            name: Some(n.into()),
            values: Some(v.into_iter().map(String::from).collect()),
        };
        assert!(filters(Some(vec![f("zone", vec!["a"])]), &["zone"], 10, 5).is_ok());
        assert!(matches!(
            filters(Some(vec![f("zonee", vec!["a"])]), &["zone"], 10, 5),
            Err(CloudError::InvalidFilter { .. })
        ));
        assert!(filters(Some(vec![f("tag:team", vec!["a"])]), &["tag:"], 10, 5).is_ok());
        assert!(matches!(
            filters(Some(vec![f("zone", vec!["a"; 6])]), &["zone"], 10, 5),
            Err(CloudError::FilterValuesLimit { .. })
        ));
        assert!(matches!(
            paging(None, Some(101), 100),
            Err(CloudError::Range { .. })
        ));
        assert_eq!(paging(None, None, 100).unwrap(), (0, 20));
    }
}
