//! Serial-console sessions (`DescribeInstanceVncUrl`).
//!
//! The tenant gets a URL carrying a random token; the database keeps only the
//! token's SHA-256 with the instance, its host, the tenant, an expiry and a
//! `used` flag. Redeeming is a single conditional
//! `UPDATE … SET used = 1 WHERE token_hash = $1 AND used = 0 AND expires_at > $2`
//! that must change exactly one row: a token works once, only before its
//! expiry, on whichever server of the cluster it is presented to. The same
//! transaction raises the host's generation, so the host's agent learns of
//! the now live session from its desired-state long poll at once.

use crate::db::col;
use crate::{now_ms, Result, Store};
use sha2::{Digest, Sha256};

/// Rows this long past their expiry are deleted when new sessions are made.
const KEEP_EXPIRED_MS: i64 = 10 * 60 * 1000;

/// A console session as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Names the session on the agent relay; not secret.
    pub session_id: String,
    /// Owner.
    pub app_id: i64,
    /// The instance.
    pub instance_id: String,
    /// The host running it when the URL was made.
    pub host_id: String,
    /// Unix ms after which the token no longer works.
    pub expires_at: i64,
}

/// The SHA-256 (hex) under which a console token is stored.
pub fn console_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Records a console session for `token`, valid for `ttl_ms`. Returns the
    /// stored session (its expiry filled in).
    pub async fn console_session_create(
        &self,
        token: &str,
        session_id: &str,
        app_id: i64,
        instance_id: &str,
        host_id: &str,
        ttl_ms: i64,
    ) -> Result<ConsoleSession> {
        let now = now_ms();
        let s = ConsoleSession {
            session_id: session_id.to_string(),
            app_id,
            instance_id: instance_id.to_string(),
            host_id: host_id.to_string(),
            expires_at: now + ttl_ms,
        };
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
            .bind(now - KEEP_EXPIRED_MS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, session_id, app_id, instance_id, host_id, expires_at, used, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(console_token_hash(token))
        .bind(&s.session_id)
        .bind(s.app_id)
        .bind(&s.instance_id)
        .bind(&s.host_id)
        .bind(s.expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Redeems a console token: `Some` exactly once, before its expiry;
    /// `None` for an unknown, used or expired token.
    pub async fn console_session_redeem(&self, token: &str) -> Result<Option<ConsoleSession>> {
        let hash = console_token_hash(token);
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE console_sessions SET used = 1 WHERE token_hash = $1 AND used = 0 AND expires_at > $2",
        )
        .bind(&hash)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT session_id, app_id, instance_id, host_id, expires_at FROM console_sessions WHERE token_hash = $1",
        )
        .bind(&hash)
        .fetch_one(&mut *tx)
        .await?;
        let s = ConsoleSession {
            session_id: col(&row, "session_id")?,
            app_id: col(&row, "app_id")?,
            instance_id: col(&row, "instance_id")?,
            host_id: col(&row, "host_id")?,
            expires_at: col(&row, "expires_at")?,
        };
        tx.commit().await?;
        Ok(Some(s))
    }

    /// Raises a host's generation: a console session for it went live, so
    /// its desired state changed and its agent's long poll must answer.
    pub async fn console_host_bump(&self, host_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE hosts SET generation = generation + 1 WHERE host_id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, crate::SecretBox::from_key(&[1u8; 32]))
            .await
            .unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn only_the_hash_is_stored_and_a_token_works_once() {
        let (store, _d) = store().await;
        let token = "c2VjcmV0LXRva2VuLXRoYXQtbm9ib2R5LWd1ZXNzZXM";
        let made = store
            .console_session_create(token, "cs-1", 7, "ins-aaaaaaaa", "host-a", 15_000)
            .await
            .unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM console_sessions")
            .fetch_all(store.r())
            .await
            .unwrap();
        assert_eq!(rows, vec![console_token_hash(token)]);
        assert_ne!(rows[0], token);
        assert_eq!(store.console_session_redeem("other").await.unwrap(), None);
        assert_eq!(
            store.console_session_redeem(token).await.unwrap(),
            Some(made)
        );
        assert_eq!(store.console_session_redeem(token).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_expired_token_does_not_work() {
        let (store, _d) = store().await;
        store
            .console_session_create("tok", "cs-2", 7, "ins-aaaaaaaa", "host-a", -1)
            .await
            .unwrap();
        assert_eq!(store.console_session_redeem("tok").await.unwrap(), None);
    }

    #[test]
    fn token_hashes_are_sha256_hex() {
        let h = console_token_hash("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
