//! Host wake-ups across servers. Several stateless servers share one
//! PostgreSQL database; a host's agent long-polls one of them for its
//! desired state. When another server changes that state (a `RunInstances`
//! it served), it sends `NOTIFY gpucloud_hosts '<server> <host> …'`; every
//! server `LISTEN`s and wakes its own long polls for that host, so the agent
//! sees the change at once instead of at its poll timeout. On SQLite there
//! is one server and nothing to send.
//!
//! A notification is a hint, never the truth: the long poll reads the
//! host's generation from the database either way, and a lost listener
//! connection wakes every poll of the server (see [`Wakeup::Lost`]).

use crate::db::Backend;
use crate::{Result, Store};

/// The channel name.
pub const CHANNEL: &str = "gpucloud_hosts";

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// Server `origin` changed the desired state of these hosts.
    Hosts {
        origin: String,
        host_ids: Vec<String>,
    },
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
                Wakeup::Hosts {
                    origin: words.next().unwrap_or_default(),
                    host_ids: words.collect(),
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
        if self.backend() != Backend::Postgres {
            return Ok(());
        }
        let mut payload = origin.to_string();
        for (i, h) in host_ids.iter().enumerate() {
            payload.push(' ');
            payload.push_str(h);
            if payload.len() > 7_000 || i + 1 == host_ids.len() {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(std::mem::replace(&mut payload, origin.to_string()))
                    .execute(self.r())
                    .await?;
            }
        }
        Ok(())
    }

    /// Listens for the other servers' wake-ups; `None` on SQLite.
    pub async fn listen_hosts(&self) -> Result<Option<Listener>> {
        let Some(url) = &self.pg_url else {
            return Ok(None);
        };
        let mut l = sqlx::postgres::PgListener::connect(url).await?;
        l.listen(CHANNEL).await?;
        Ok(Some(Listener(l)))
    }
}
