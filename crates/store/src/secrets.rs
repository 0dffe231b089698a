//! Sealing of secrets at rest (API SecretKeys, instance passwords).
//!
//! A SecretKey has to be recoverable — TC3 signatures are HMACs keyed with it —
//! so it cannot be hashed. It is sealed with AES-256-GCM under a master key
//! that lives in a file readable only by its owner (mode 0600), outside the
//! database: a copy of the database alone reveals no key.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Errors of the master key and of sealing.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The master key file could not be read or written.
    #[error("master key file {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The master key file holds something else than 64 hex digits.
    #[error("master key file {0} is not 64 hex digits")]
    Format(String),
    /// The master key file is readable by others.
    #[error("master key file {path} has mode {mode:o}; it must be 0600 (chmod 600 {path})")]
    Permissions {
        /// File.
        path: String,
        /// Mode.
        mode: u32,
    },
    /// A sealed value could not be opened (wrong master key or damage).
    #[error("a sealed secret cannot be opened with this master key")]
    Open,
}

/// Seals and opens secrets with the master key.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// From 32 raw key bytes.
    pub fn from_key(bytes: &[u8; 32]) -> Self {
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"),
        );
        Self {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// Loads the master key file, creating it (mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let p = path.display().to_string();
        let io = |source| SecretError::Io {
            path: p.clone(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretError::Permissions { path: p, mode });
                }
                let raw = hex::decode(text.trim()).map_err(|_| SecretError::Format(p.clone()))?;
                let bytes: [u8; 32] = raw.try_into().map_err(|_| SecretError::Format(p.clone()))?;
                Ok(Self::from_key(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .expect("the system RNG works");
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(hex::encode(bytes).as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(Self::from_key(&bytes))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `plain` into base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system RNG works");
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("AES-GCM sealing of a short buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens a value made by [`SecretBox::seal`].
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SecretError::Open)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Open)
    }
}

/// Random bytes from the system RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system RNG works");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        let b = SecretBox::from_key(&[7u8; 32]);
        let s = b.seal("secret-key");
        assert_ne!(s, b.seal("secret-key"), "nonces differ");
        assert_eq!(b.open(&s).unwrap(), "secret-key");
        let other = SecretBox::from_key(&[8u8; 32]);
        assert!(other.open(&s).is_err());
        assert!(b.open("garbage").is_err());
    }

    #[test]
    fn master_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let a = SecretBox::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SecretBox::load_or_create(&p).unwrap();
        assert_eq!(b.open(&a.seal("x")).unwrap(), "x");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretBox::load_or_create(&p),
            Err(SecretError::Permissions { .. })
        ));
    }
}
