//! Join tokens for host agents. A token is `gcj.<id>.<secret>`; only the
//! SHA-256 of the secret is stored. Tokens expire and have a use count.
//!
//! A token joins *new* hosts only: a host ID that is already known (a row in
//! `hosts` or a certificate in `agent_certs`) is refused, so whoever holds a
//! token cannot enrol a machine as somebody else's host and receive its
//! instances. Re-joining a known host (a reinstalled machine, a lost
//! certificate) takes a token issued for that host ID; joining with it
//! replaces — revokes — the host's earlier certificates.

use crate::db::col;
use crate::secrets::random_bytes;
use crate::{now_ms, Result, Store};
use sha2::{Digest, Sha256};

/// Why a join token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token we issued (unknown ID, wrong secret, malformed).
    Invalid,
    /// Past its expiry time.
    Expired,
    /// Used as many times as it allowed.
    UsedUp,
    /// The token was issued for another host.
    WrongHost,
    /// The host ID already joined; re-joining it takes a token issued for it.
    HostTaken,
}

/// A join token as listed for operators (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinTokenInfo {
    /// Public part of the token (`gcj.<id>.…`).
    pub token_id: String,
    /// What the operator wrote when creating it.
    pub description: String,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Joins left.
    pub uses_left: i64,
    /// The one host this token may re-join, if it was issued for one.
    pub host_id: Option<String>,
    /// Creation (Unix ms).
    pub created_at: i64,
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(n: usize) -> String {
    random_bytes::<32>()
        .iter()
        .take(n)
        .map(|b| ALNUM[(*b as usize) % ALNUM.len()] as char)
        .collect()
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Issues a join token valid for `ttl_ms` and `uses` joins of new
    /// hosts. Returns the token text.
    pub async fn join_token_create(
        &self,
        description: &str,
        ttl_ms: i64,
        uses: i64,
    ) -> Result<String> {
        self.join_token_insert(description, ttl_ms, uses, None)
            .await
    }

    /// Issues a one-use token valid for `ttl_ms` that re-joins `host_id`
    /// (new or known), replacing its certificates.
    pub async fn join_token_for_host(
        &self,
        description: &str,
        ttl_ms: i64,
        host_id: &str,
    ) -> Result<String> {
        self.join_token_insert(description, ttl_ms, 1, Some(host_id))
            .await
    }

    async fn join_token_insert(
        &self,
        description: &str,
        ttl_ms: i64,
        uses: i64,
        host_id: Option<&str>,
    ) -> Result<String> {
        let id = random_string(8);
        let secret = random_string(24);
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO join_tokens (token_id, secret_hash, description, expires_at, uses_left, created_at, host_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(hash(&secret))
        .bind(description)
        .bind(now + ttl_ms)
        .bind(uses)
        .bind(now)
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(format!("gcj.{id}.{secret}"))
    }

    /// Checks a token and uses it once.
    pub async fn join_token_use(
        &self,
        token: &str,
    ) -> Result<std::result::Result<(), TokenRefusal>> {
        self.join(token, None).await
    }

    /// A host joins: its token is checked and used once and, with it, the
    /// certificate signed for the host is recorded — one transaction, so a
    /// failure leaves the token unused and the agent may simply retry.
    pub async fn join_host(
        &self,
        token: &str,
        fingerprint: &str,
        host_id: &str,
    ) -> Result<std::result::Result<(), TokenRefusal>> {
        self.join(token, Some((fingerprint, host_id))).await
    }

    async fn join(
        &self,
        token: &str,
        cert: Option<(&str, &str)>,
    ) -> Result<std::result::Result<(), TokenRefusal>> {
        let mut parts = token.trim().split('.');
        let (Some("gcj"), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(Err(TokenRefusal::Invalid));
        };
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(
            "SELECT secret_hash, expires_at, uses_left, host_id FROM join_tokens WHERE token_id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Err(TokenRefusal::Invalid));
        };
        let stored: String = col(&row, "secret_hash")?;
        let given = hash(secret);
        let same = stored.len() == given.len()
            && stored
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Ok(Err(TokenRefusal::Invalid));
        }
        let expires: i64 = col(&row, "expires_at")?;
        if expires < now_ms() {
            return Ok(Err(TokenRefusal::Expired));
        }
        let bound: Option<String> = col(&row, "host_id")?;
        if let Some((_, host_id)) = cert {
            // Two first joins of one new host ID at once: on PostgreSQL the
            // second waits here and then sees the first's certificate
            // (SQLite's write transactions are serial already).
            if self.backend() == crate::Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("gpucloud-join {host_id}"))
                    .execute(&mut *tx)
                    .await?;
            }
            match bound.as_deref() {
                Some(b) if b != host_id => return Ok(Err(TokenRefusal::WrongHost)),
                Some(_) => {
                    // Re-joining replaces the host's identity: the
                    // certificates it had stop working.
                    sqlx::query("DELETE FROM agent_certs WHERE host_id = $1")
                        .bind(host_id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    let known: i64 = col(
                        &sqlx::query(
                            "SELECT CAST((SELECT COUNT(*) FROM hosts WHERE host_id = $1) + (SELECT COUNT(*) FROM agent_certs WHERE host_id = $1) AS BIGINT) AS n",
                        )
                        .bind(host_id)
                        .fetch_one(&mut *tx)
                        .await?,
                        "n",
                    )?;
                    if known > 0 {
                        return Ok(Err(TokenRefusal::HostTaken));
                    }
                }
            }
        }
        let n = sqlx::query("UPDATE join_tokens SET uses_left = uses_left - 1 WHERE token_id = $1 AND uses_left > 0")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n != 1 {
            return Ok(Err(TokenRefusal::UsedUp));
        }
        if let Some((fingerprint, host_id)) = cert {
            insert_cert(&mut tx, fingerprint, host_id).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Revokes a join token (by the ID in `gcj.<id>.…`): no join uses it
    /// again. `false` when there is no such token.
    pub async fn join_token_revoke(&self, token_id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE join_tokens SET uses_left = 0 WHERE token_id = $1")
            .bind(token_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Join tokens (operator view).
    pub async fn join_tokens(&self) -> Result<Vec<JoinTokenInfo>> {
        let rows = sqlx::query("SELECT token_id, description, expires_at, uses_left, created_at, host_id FROM join_tokens ORDER BY created_at")
            .fetch_all(self.r())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JoinTokenInfo {
                    token_id: col(r, "token_id")?,
                    description: col(r, "description")?,
                    expires_at: col(r, "expires_at")?,
                    uses_left: col(r, "uses_left")?,
                    created_at: col(r, "created_at")?,
                    host_id: col(r, "host_id")?,
                })
            })
            .collect()
    }

    /// Records the certificate issued to a host's agent.
    pub async fn agent_cert_add(&self, fingerprint: &str, host_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_cert(&mut tx, fingerprint, host_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The host a client certificate was issued to.
    pub async fn agent_cert_host(&self, fingerprint: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT host_id FROM agent_certs WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(self.r())
            .await?;
        row.map(|r| col(&r, "host_id")).transpose()
    }

    /// Inserts a setting unless it exists; returns the stored value.
    pub async fn setting_init(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        let v: String = col(
            &sqlx::query("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?,
            "value",
        )?;
        tx.commit().await?;
        Ok(v)
    }

    /// Removes a host that has no instances left (operator).
    pub async fn host_remove(
        &self,
        host_id: &str,
    ) -> std::result::Result<(), crate::instances::TxError> {
        let mut tx = self.begin_write().await?;
        let n: i64 = col(
            &sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM instances WHERE (host_id = $1 OR prev_host_id = $1) AND state <> 'TERMINATED'")
                .bind(host_id)
                .fetch_one(&mut *tx)
                .await?,
            "n",
        )?;
        if n > 0 {
            return Err(crate::instances::TxError::Cloud(gpucloud_core::CloudError::Unsupported(format!(
                "removing host {host_id} while it holds {n} instance(s); drain it first (gpucloud admin hosts drain)"
            ))));
        }
        sqlx::query("DELETE FROM agent_certs WHERE host_id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM gpu_claims WHERE host_id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM gpus WHERE host_id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM hosts WHERE host_id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(crate::instances::TxError::Store(
                crate::StoreError::NotFound(format!("host {host_id}")),
            ));
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Records an agent certificate inside `tx` (a second record of the same
/// fingerprint is a no-op).
async fn insert_cert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    fingerprint: &str,
    host_id: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO agent_certs (fingerprint, host_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (fingerprint) DO NOTHING")
        .bind(fingerprint)
        .bind(host_id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_hash_of_the_secret_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, crate::SecretBox::from_key(&[1u8; 32]))
            .await
            .unwrap();
        let t = store.join_token_create("x", 60_000, 1).await.unwrap();
        let secret = t.rsplit('.').next().unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM join_tokens")
            .fetch_all(store.r())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].contains(secret));
        assert_eq!(rows[0], hash(secret));
    }
}
