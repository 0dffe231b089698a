//! Input rules for names, passwords, user data and instance naming patterns.

use crate::error::CloudError;
use base64::Engine as _;

/// Longest instance name.
pub const MAX_INSTANCE_NAME: usize = 128;
/// Largest decoded UserData.
pub const MAX_USER_DATA: usize = 16 * 1024;
/// Default instance name (Tencent's).
pub const DEFAULT_INSTANCE_NAME: &str = "未命名";

/// Checks a key pair name: 1–25 characters of `[A-Za-z0-9_]`.
pub fn key_pair_name(name: &str) -> Result<(), CloudError> {
    if name.is_empty() {
        return Err(CloudError::KeyPairNameEmpty);
    }
    if name.chars().count() > 25 {
        return Err(CloudError::KeyPairNameTooLong(name.to_string()));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CloudError::KeyPairNameIllegal(name.to_string()));
    }
    Ok(())
}

/// Checks a Linux host name: 2–60 characters of letters, digits, `.` and `-`,
/// no leading/trailing/consecutive `.` or `-`.
pub fn host_name(name: &str) -> Result<(), CloudError> {
    let bad = || CloudError::IllegalHostName(name.to_string());
    let n = name.len();
    if !(2..=60).contains(&n) {
        return Err(bad());
    }
    let b = name.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
    {
        return Err(bad());
    }
    let sep = |c: u8| c == b'.' || c == b'-';
    if sep(b[0]) || sep(b[n - 1]) || b.windows(2).any(|w| sep(w[0]) && sep(w[1])) {
        return Err(bad());
    }
    Ok(())
}

const SPECIALS: &str = "()`~!@#$%^&*-+=|{}[]:;'<>,.?/";

/// Checks a Linux login password.
pub fn password(pw: &str) -> Result<(), CloudError> {
    let n = pw.chars().count();
    if !(8..=30).contains(&n) {
        return Err(CloudError::InvalidPassword(format!(
            "it has {n} characters"
        )));
    }
    if pw.starts_with('/') {
        return Err(CloudError::InvalidPassword("it starts with `/`".into()));
    }
    if let Some(c) = pw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || SPECIALS.contains(*c)))
    {
        return Err(CloudError::InvalidPassword(format!(
            "it contains the character {c:?}"
        )));
    }
    let classes = [
        pw.chars().any(|c| c.is_ascii_lowercase()),
        pw.chars().any(|c| c.is_ascii_uppercase()),
        pw.chars().any(|c| c.is_ascii_digit()),
        pw.chars().any(|c| SPECIALS.contains(c)),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if classes < 2 {
        return Err(CloudError::InvalidPassword(
            "it uses only one kind of character".into(),
        ));
    }
    Ok(())
}

/// Decodes and checks UserData; returns the raw bytes.
pub fn user_data(b64: &str) -> Result<Vec<u8>, CloudError> {
    // The base64 of 16 KiB is 21,848 characters; refuse early before decoding more.
    if b64.len() > (MAX_USER_DATA.div_ceil(3) * 4) + 4 {
        return Err(CloudError::UserDataTooLarge {
            size: b64.len() / 4 * 3,
            limit: MAX_USER_DATA,
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| CloudError::InvalidUserData(e.to_string()))?;
    if raw.len() > MAX_USER_DATA {
        return Err(CloudError::UserDataTooLarge {
            size: raw.len(),
            limit: MAX_USER_DATA,
        });
    }
    Ok(raw)
}

/// Checks a ClientToken.
pub fn client_token(t: &str) -> Result<(), CloudError> {
    if t.len() > 64 || !t.is_ascii() {
        return Err(CloudError::ClientTokenTooLong);
    }
    Ok(())
}

/// Names for `count` instances from a base name, Tencent style: a `{R:x}`
/// pattern counts up from x; otherwise several instances get `-1`, `-2`, … .
pub fn instance_names(base: &str, count: usize) -> Result<Vec<String>, CloudError> {
    if base.chars().count() > MAX_INSTANCE_NAME {
        return Err(CloudError::InstanceNameTooLong(MAX_INSTANCE_NAME));
    }
    if let Some(start) = base.find("{R:") {
        if let Some(len) = base[start..].find('}') {
            let num = &base[start + 3..start + len];
            let bad = || {
                CloudError::value(
                    "InstanceName",
                    format!("`{{R:{num}}}` must hold a number of at most 9 digits"),
                )
            };
            if num.is_empty() || num.len() > 9 || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let first: u64 = num.parse().map_err(|_| bad())?;
            let (pre, post) = (&base[..start], &base[start + len + 1..]);
            let names: Vec<String> = (0..count as u64)
                .map(|i| format!("{pre}{}{post}", first + i))
                .collect();
            if names.iter().any(|n| n.chars().count() > MAX_INSTANCE_NAME) {
                return Err(CloudError::InstanceNameTooLong(MAX_INSTANCE_NAME));
            }
            return Ok(names);
        }
    }
    if count == 1 {
        return Ok(vec![base.to_string()]);
    }
    Ok((1..=count).map(|i| format!("{base}-{i}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(key_pair_name("my_key_1").is_ok());
        assert_eq!(key_pair_name(""), Err(CloudError::KeyPairNameEmpty));
        assert!(matches!(
            key_pair_name("a-b"),
            Err(CloudError::KeyPairNameIllegal(_))
        ));
        assert!(matches!(
            key_pair_name(&"a".repeat(26)),
            Err(CloudError::KeyPairNameTooLong(_))
        ));
    }

    #[test]
    fn host_names() {
        for ok in ["ab", "gpu-node.1", "ins-abcd1234"] {
            assert!(host_name(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "-ab", "ab-", "a..b", "a-.b", "a_b", &"a".repeat(61)] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("Passw0rd").is_ok());
        assert!(password("abc12345").is_ok());
        assert!(password("abcdefgh").is_err());
        assert!(password("Ab1").is_err());
        assert!(password("/Abcdefg1").is_err());
        assert!(password("Abcdefg1\u{e9}").is_err());
        assert!(password(&"Ab1".repeat(11)).is_err());
    }

    #[test]
    fn user_data_rules() {
        assert_eq!(user_data("aGVsbG8=").unwrap(), b"hello");
        assert!(matches!(
            user_data("not base64!"),
            Err(CloudError::InvalidUserData(_))
        ));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; MAX_USER_DATA + 1]);
        assert!(matches!(
            user_data(&big),
            Err(CloudError::UserDataTooLarge { .. })
        ));
        let ok = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; MAX_USER_DATA]);
        assert!(user_data(&ok).is_ok());
    }

    #[test]
    fn naming() {
        assert_eq!(instance_names("web", 1).unwrap(), vec!["web"]);
        assert_eq!(instance_names("web", 2).unwrap(), vec!["web-1", "web-2"]);
        assert_eq!(
            instance_names("node{R:3}-gpu", 2).unwrap(),
            vec!["node3-gpu", "node4-gpu"]
        );
        assert!(instance_names("n{R:x}", 2).is_err());
        for bad in ["n{R:18446744073709551615}", "n{R:+3}", "n{R:}", "n{R:-1}"] {
            assert!(
                matches!(
                    instance_names(bad, 2),
                    Err(CloudError::InvalidParameterValue { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("{}{{R:999999999}}", "a".repeat(MAX_INSTANCE_NAME - 9));
        assert_eq!(
            instance_names(&long, 2),
            Err(CloudError::InstanceNameTooLong(MAX_INSTANCE_NAME))
        );
        assert!(instance_names(&"n".repeat(129), 1).is_err());
    }
}
