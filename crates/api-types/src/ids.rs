//! Resource ID formats: `<prefix>-` followed by eight characters of `[a-z0-9]`,
//! as Tencent's IDs are (`ins-bfw5zq3y`, `skey-mv9yzyjj`, `ps-39lmgkht`).

use rand::Rng;

/// The kinds of IDs gpucloud hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// `ins-`
    Instance,
    /// `img-`
    Image,
    /// `skey-`
    KeyPair,
    /// `ps-` (disaster-recover / spread placement group)
    PlacementGroup,
    /// `vpc-`
    Vpc,
    /// `subnet-`
    Subnet,
    /// `disk-`
    Disk,
    /// `host-`
    Host,
    /// `sg-`
    SecurityGroup,
    /// `inv-` (TAT invocation)
    Invocation,
    /// `invt-` (TAT invocation task)
    InvocationTask,
    /// `cmd-` (TAT command)
    Command,
}

impl IdKind {
    /// The prefix, without the dash.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Instance => "ins",
            Self::Image => "img",
            Self::KeyPair => "skey",
            Self::PlacementGroup => "ps",
            Self::Vpc => "vpc",
            Self::Subnet => "subnet",
            Self::Disk => "disk",
            Self::Host => "host",
            Self::SecurityGroup => "sg",
            Self::Invocation => "inv",
            Self::InvocationTask => "invt",
            Self::Command => "cmd",
        }
    }
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh random ID of `kind`.
pub fn new_id(kind: IdKind) -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{suffix}", kind.prefix())
}

/// A deterministic ID of `kind` derived from `seed` bytes (first 8 used, any length accepted).
pub fn id_from_bytes(kind: IdKind, seed: &[u8]) -> String {
    let mut n: u64 = 0;
    for b in seed.iter().take(8) {
        n = (n << 8) | u64::from(*b);
    }
    let mut suffix = String::with_capacity(8);
    for _ in 0..8 {
        suffix.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    format!("{}-{suffix}", kind.prefix())
}

/// Whether `id` has the exact shape of an ID of `kind`.
pub fn is_valid(kind: IdKind, id: &str) -> bool {
    id.strip_prefix(kind.prefix())
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|s| {
            s.len() == 8
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for kind in [IdKind::Instance, IdKind::KeyPair, IdKind::PlacementGroup] {
            let id = new_id(kind);
            assert!(is_valid(kind, &id), "{id}");
        }
        assert!(is_valid(IdKind::Instance, "ins-bfw5zq3y"));
        assert!(!is_valid(IdKind::Instance, "ins-1122"));
        assert!(!is_valid(IdKind::Instance, "ins-BFW5ZQ3Y"));
        assert!(!is_valid(IdKind::Instance, "img-bfw5zq3y"));
        assert!(!is_valid(IdKind::Instance, "insbfw5zq3yx"));
        assert!(is_valid(
            IdKind::Host,
            &id_from_bytes(IdKind::Host, b"seed-bytes")
        ));
    }
}
