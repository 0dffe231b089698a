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
//!
//! # Relay through the database
//! With several servers (PostgreSQL), the tenant's WebSocket and the host
//! agent's exchanges may reach different servers, so the bytes go through
//! `console_relay`: the WebSocket's server writes the tenant's input as
//! `in` rows and takes `out` rows; the agent's exchanges, on any server,
//! write `out` rows and take `in` rows. A session is live while it is
//! redeemed, not ended, and its WebSocket's server touched `ws_seen_at`
//! within the freshness window the caller passes — a server that died with
//! a session open leaves it dead, not live forever. Taking is a
//! `DELETE … RETURNING`, so every chunk reaches exactly one reader, in
//! `seq` order. One server (SQLite) relays in memory instead.

use crate::db::col;
use crate::{now_ms, Result, Store};
use base64::Engine as _;
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
        // Unused, ended or abandoned sessions, and their bytes.
        sqlx::query(
            "DELETE FROM console_sessions WHERE expires_at < $1
               AND (used = 0 OR ended_at IS NOT NULL OR ws_seen_at IS NULL OR ws_seen_at < $1)",
        )
        .bind(now - KEEP_EXPIRED_MS)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM console_relay WHERE session_id NOT IN (SELECT session_id FROM console_sessions)",
        )
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
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE console_sessions SET used = 1, ws_seen_at = $2 WHERE token_hash = $1 AND used = 0 AND expires_at > $2",
        )
        .bind(&hash)
        .bind(now)
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

/// Which way relayed bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The tenant's input, for the VM.
    In,
    /// The VM's output, for the tenant.
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A session as its WebSocket's server polls it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayPoll {
    /// Output taken, in order.
    pub output: Vec<Vec<u8>>,
    /// `Some` once the session ended: `Some(Some(reason))` when the relay
    /// failed, `Some(None)` when it was closed. A session that is gone
    /// counts as closed.
    pub ended: Option<Option<String>>,
    /// When the agent last exchanged (Unix ms), if it has.
    pub agent_seen_at: Option<i64>,
    /// The heartbeat found the session stale (its WebSocket's server was
    /// not seen within the freshness window): agents have stopped relaying
    /// it, so it is over.
    pub lapsed: bool,
}

/// What queueing bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The session is not live (or not this host's): nothing was queued.
    Ended,
    /// Queued.
    Queued,
    /// The backlog limit was reached (the reader does not keep up): nothing
    /// was queued.
    Full,
}

fn decode_chunks(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Vec<u8>>> {
    let mut chunks = Vec::with_capacity(rows.len());
    for r in rows {
        let seq: i64 = col(&r, "seq")?;
        let data: String = col(&r, "data")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| crate::StoreError::Corrupt(format!("console_relay.data: {e}")))?;
        chunks.push((seq, bytes));
    }
    chunks.sort_by_key(|c| c.0);
    Ok(chunks.into_iter().map(|c| c.1).collect())
}

impl Store {
    /// The live sessions of a host, `(session_id, instance_id)` by session,
    /// whose WebSocket's server was seen after `fresh_after` (Unix ms).
    pub async fn console_live_for_host(
        &self,
        host_id: &str,
        fresh_after: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT session_id, instance_id FROM console_sessions
             WHERE host_id = $1 AND used = 1 AND ended_at IS NULL AND ws_seen_at > $2
             ORDER BY session_id",
        )
        .bind(host_id)
        .bind(fresh_after)
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| Ok((col(r, "session_id")?, col(r, "instance_id")?)))
            .collect()
    }

    /// Queues `data` in one direction after what waits there, unless
    /// `max_pending` chunks wait already.
    async fn console_queue(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        session_id: &str,
        dir: Direction,
        data: &[u8],
        max_pending: i64,
    ) -> Result<Put> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(MAX(seq), 0) + 1 AS BIGINT) AS next
             FROM console_relay WHERE session_id = $1 AND direction = $2",
        )
        .bind(session_id)
        .bind(dir.as_str())
        .fetch_one(&mut **tx)
        .await?;
        if col::<i64>(&row, "n")? >= max_pending {
            return Ok(Put::Full);
        }
        sqlx::query(
            "INSERT INTO console_relay (session_id, direction, seq, data) VALUES ($1, $2, $3, $4)",
        )
        .bind(session_id)
        .bind(dir.as_str())
        .bind(col::<i64>(&row, "next")?)
        .bind(base64::engine::general_purpose::STANDARD.encode(data))
        .execute(&mut **tx)
        .await?;
        Ok(Put::Queued)
    }

    /// Takes the queued chunks of one direction, oldest first: at most
    /// `max_chunks`, and no more than fit in `budget` bytes (at least one).
    /// Each chunk is taken once even when two readers race
    /// (`DELETE … RETURNING`).
    async fn console_take(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        session_id: &str,
        dir: Direction,
        budget: usize,
        max_chunks: usize,
    ) -> Result<Vec<Vec<u8>>> {
        if max_chunks == 0 {
            return Ok(Vec::new());
        }
        let sizes = sqlx::query(
            "SELECT seq, CAST(LENGTH(data) AS BIGINT) AS n FROM console_relay
             WHERE session_id = $1 AND direction = $2 ORDER BY seq LIMIT $3",
        )
        .bind(session_id)
        .bind(dir.as_str())
        .bind(max_chunks.min(i64::MAX as usize) as i64)
        .fetch_all(&mut **tx)
        .await?;
        let Some(first) = sizes.first() else {
            return Ok(Vec::new());
        };
        let mut upto: i64 = col(first, "seq")?;
        let mut total = 0usize;
        for r in &sizes {
            // base64: 4 characters per 3 bytes.
            let n: i64 = col(r, "n")?;
            total += n.max(0) as usize / 4 * 3;
            if total > budget {
                break;
            }
            upto = col(r, "seq")?;
        }
        let rows = sqlx::query(
            "DELETE FROM console_relay WHERE session_id = $1 AND direction = $2 AND seq <= $3 RETURNING seq, data",
        )
        .bind(session_id)
        .bind(dir.as_str())
        .bind(upto)
        .fetch_all(&mut **tx)
        .await?;
        decode_chunks(rows)
    }

    /// The WebSocket's server: queues the tenant's input, unless
    /// `max_pending` chunks wait already.
    pub async fn console_ws_input(
        &self,
        session_id: &str,
        data: &[u8],
        max_pending: i64,
    ) -> Result<Put> {
        let mut tx = self.begin_write().await?;
        let ended: Option<Option<i64>> =
            sqlx::query_scalar("SELECT ended_at FROM console_sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?;
        if !matches!(ended, Some(None)) {
            return Ok(Put::Ended);
        }
        let put =
            Self::console_queue(&mut tx, session_id, Direction::In, data, max_pending).await?;
        tx.commit().await?;
        Ok(put)
    }

    /// The WebSocket's server: reads how the session stands, takes up to
    /// `max_chunks` of output and (`heartbeat`) marks its WebSocket as still
    /// open — which only a session still fresh after `fresh_after` can be.
    ///
    /// The state is read before the output is taken: output queued before
    /// an agent's failure is taken by the poll that reports the failure, or
    /// an earlier one (each statement sees what committed before it).
    pub async fn console_ws_poll(
        &self,
        session_id: &str,
        heartbeat: bool,
        fresh_after: i64,
        max_chunks: usize,
    ) -> Result<RelayPoll> {
        let mut tx = self.begin_write().await?;
        let mut lapsed = false;
        if heartbeat {
            lapsed = sqlx::query(
                "UPDATE console_sessions SET ws_seen_at = $2
                 WHERE session_id = $1 AND ended_at IS NULL AND ws_seen_at > $3",
            )
            .bind(session_id)
            .bind(now_ms())
            .bind(fresh_after)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 0;
        }
        let row = sqlx::query(
            "SELECT ended_at, end_reason, agent_seen_at FROM console_sessions WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        let output =
            Self::console_take(&mut tx, session_id, Direction::Out, usize::MAX, max_chunks).await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(RelayPoll {
                output,
                ended: Some(None),
                agent_seen_at: None,
                lapsed: false,
            });
        };
        let ended_at: Option<i64> = col(&row, "ended_at")?;
        let reason: Option<String> = col(&row, "end_reason")?;
        Ok(RelayPoll {
            output,
            lapsed: lapsed && ended_at.is_none(),
            ended: ended_at.map(|_| reason),
            agent_seen_at: col(&row, "agent_seen_at")?,
        })
    }

    /// The WebSocket closed: the session ends (a reason already recorded
    /// stays) and its queued bytes go.
    pub async fn console_ws_close(&self, session_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE console_sessions SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL",
        )
        .bind(session_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM console_relay WHERE session_id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `session_id` is live for `host_id` (its WebSocket's server
    /// seen after `fresh_after`); marks the agent as seen if so.
    async fn console_agent_live(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        session_id: &str,
        host_id: &str,
        fresh_after: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE console_sessions SET agent_seen_at = $4
             WHERE session_id = $1 AND host_id = $2 AND used = 1 AND ended_at IS NULL AND ws_seen_at > $3",
        )
        .bind(session_id)
        .bind(host_id)
        .bind(fresh_after)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// The host agent: queues the VM's output for the tenant, unless
    /// `max_pending` chunks wait already.
    pub async fn console_agent_output(
        &self,
        session_id: &str,
        host_id: &str,
        fresh_after: i64,
        data: &[u8],
        max_pending: i64,
    ) -> Result<Put> {
        let mut tx = self.begin_write().await?;
        if !Self::console_agent_live(&mut tx, session_id, host_id, fresh_after).await? {
            return Ok(Put::Ended);
        }
        let put =
            Self::console_queue(&mut tx, session_id, Direction::Out, data, max_pending).await?;
        tx.commit().await?;
        Ok(put)
    }

    /// The host agent: takes the tenant's input, in order, about `budget`
    /// bytes at most (at least one chunk). `None` when the session is not
    /// live (or not this host's).
    pub async fn console_agent_input(
        &self,
        session_id: &str,
        host_id: &str,
        fresh_after: i64,
        budget: usize,
    ) -> Result<Option<Vec<u8>>> {
        let mut tx = self.begin_write().await?;
        if !Self::console_agent_live(&mut tx, session_id, host_id, fresh_after).await? {
            return Ok(None);
        }
        let input = Self::console_take(&mut tx, session_id, Direction::In, budget, usize::MAX)
            .await?
            .concat();
        tx.commit().await?;
        Ok(Some(input))
    }

    /// The host agent cannot serve the session: it ends with `reason`, which
    /// the tenant sees after the output already queued. Only the session's
    /// host can end it so.
    pub async fn console_agent_fail(
        &self,
        session_id: &str,
        host_id: &str,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE console_sessions SET ended_at = $3, end_reason = $4, agent_seen_at = $3
             WHERE session_id = $1 AND host_id = $2 AND used = 1 AND ended_at IS NULL",
        )
        .bind(session_id)
        .bind(host_id)
        .bind(now_ms())
        .bind(reason)
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
