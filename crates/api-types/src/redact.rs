//! `Debug` for types that hold secrets (passwords, API keys, private keys,
//! join tokens, user data): the secret fields print as `<redacted>` (or
//! `None`), so a `{:?}` in a log line can never leak one.
//!
//! [`debug_redacted!`](crate::debug_redacted) destructures the type without
//! `..`: a field added later fails to compile until it is listed as plain or
//! secret.

use std::fmt;

/// Prints a secret's presence, never its value.
pub struct Redacted<'a, T: ?Sized>(pub &'a T);

/// What a secret field prints as.
pub trait Presence {
    /// Whether there is a value to hide.
    fn present(&self) -> bool;
}

impl Presence for String {
    fn present(&self) -> bool {
        true
    }
}

impl<T> Presence for Option<T> {
    fn present(&self) -> bool {
        self.is_some()
    }
}

impl<T: Presence + ?Sized> fmt::Debug for Redacted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.present() {
            "<redacted>"
        } else {
            "None"
        })
    }
}

/// Implements `Debug` for a struct, printing the fields after `secret` as
/// `<redacted>`:
///
/// ```
/// struct Login { user: String, password: Option<String> }
/// gpucloud_api_types::debug_redacted!(Login { user } secret { password });
/// let l = Login { user: "root".into(), password: Some("hunter2".into()) };
/// assert_eq!(format!("{l:?}"), r#"Login { user: "root", password: <redacted> }"#);
/// ```
#[macro_export]
macro_rules! debug_redacted {
    ($ty:ident { $($field:ident),* $(,)? } secret { $($secret:ident),+ $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let $ty { $($field,)* $($secret,)+ } = self;
                let mut d = f.debug_struct(stringify!($ty));
                $( d.field(stringify!($field), $field); )*
                $( d.field(stringify!($secret), &$crate::redact::Redacted($secret)); )+
                d.finish()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    struct Key {
        id: String,
        key: String,
        note: Option<String>,
    }
    crate::debug_redacted!(Key { id } secret { key, note });

    #[test]
    fn secrets_never_print() {
        let k = Key {
            id: "AKID1".into(),
            key: "s3cr3t".into(),
            note: None,
        };
        let s = format!("{k:?} {k:#?}");
        assert!(!s.contains("s3cr3t"), "{s}");
        assert!(s.contains("AKID1") && s.contains("<redacted>") && s.contains("None"));
    }
}
