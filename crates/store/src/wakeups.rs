//! Host wake-ups across servers. Several stateless servers share one
//! PostgreSQL database; a host's agent long-polls one of them for its
//! desired state. When another server changes that state (a `RunInstances`
//! it served), it sends `NOTIFY gpucloud_hosts '<server> <host> …'`; every
//! server `LISTEN`s and wakes its own long polls for that host, so the agent
//! sees the change at once instead of at its poll timeout. On SQLite there
//! is one server and nothing to send.
//!
//! Serial consoles relayed through the database (`consoles`) use a second
//! channel, `gpucloud_consoles '<server> <word> …'`, whose words name a
//! session's side with news: `in:<session>` (input for the agent),
//! `out:<session>` (output or an end for the WebSocket).
//!
//! A notification is a hint, never the truth: the long poll reads the
//! host's generation from the database either way, and a lost listener
//! connection wakes every poll of the server (see [`Wakeup::Lost`]).

use crate::db::Backend;
use crate::{Result, Store};

/// The channel of host wake-ups.
pub const CHANNEL: &str = "gpucloud_hosts";
/// The channel of console relay wake-ups.
pub const CONSOLE_CHANNEL: &str = "gpucloud_consoles";

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// Server `origin` changed the desired state of these hosts.
    Hosts {
        origin: String,
        host_ids: Vec<String>,
    },
    /// Server `origin` relayed console bytes: `in:<session>`,
    /// `out:<session>` words.
    Consoles { origin: String, words: Vec<String> },
    /// The connection dropped (and is being re-made): notifications may have
    /// been missed, so every host should look again.
    Lost,
}

/// A `LISTEN` connection.
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    /// The next wake-up.
    pub async fn next(&mut self) -> Result<Wakeup> {
        Ok(match self.0.try_recv().await? {
            Some(n) => {
                let mut words = n.payload().split_whitespace().map(str::to_string);
                let origin = words.next().unwrap_or_default();
                if n.channel() == CONSOLE_CHANNEL {
                    Wakeup::Consoles {
                        origin,
                        words: words.collect(),
                    }
                } else {
                    Wakeup::Hosts {
                        origin,
                        host_ids: words.collect(),
                    }
                }
            }
            None => Wakeup::Lost,
        })
    }
}

impl Store {
    /// Tells the other servers that these hosts' desired state changed,
    /// in as few notifications as fit PostgreSQL's 8000-byte payload.
    /// `origin` names this server. Nothing on SQLite.
    pub async fn notify_hosts(&self, origin: &str, host_ids: &[String]) -> Result<()> {
        self.notify(CHANNEL, origin, host_ids).await
    }

    /// Sends `words` from `origin` on `channel` ([`CHANNEL`] or
    /// [`CONSOLE_CHANNEL`]), in as few notifications as fit. Nothing on
    /// SQLite.
    pub async fn notify(&self, channel: &str, origin: &str, words: &[String]) -> Result<()> {
        if self.backend() != Backend::Postgres {
            return Ok(());
        }
        let mut payload = origin.to_string();
        for (i, h) in words.iter().enumerate() {
            payload.push(' ');
            payload.push_str(h);
            if payload.len() > 7_000 || i + 1 == words.len() {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(channel)
                    .bind(std::mem::replace(&mut payload, origin.to_string()))
                    .execute(self.r())
                    .await?;
            }
        }
        Ok(())
    }

    /// Listens for the other servers' wake-ups (both channels); `None` on
    /// SQLite.
    pub async fn listen(&self) -> Result<Option<Listener>> {
        let Some(url) = &self.pg_url else {
            return Ok(None);
        };
        let mut l = sqlx::postgres::PgListener::connect(url).await?;
        l.listen_all([CHANNEL, CONSOLE_CHANNEL]).await?;
        Ok(Some(Listener(l)))
    }
}
