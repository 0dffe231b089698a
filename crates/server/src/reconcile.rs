//! Background reconcilers. Each takes no hint about what changed: it reads the
//! world, compares it with what should be, and repairs the difference, on a
//! timer. Running one twice is harmless.
//!
//! * **capacity** — reloads into the scheduler's index the hosts whose
//!   database generation moved (claims made or released by other servers,
//!   operator changes), one host at a time (see `sched`);
//! * **host liveness** — a host whose agent has talked neither to this
//!   server (its memory) nor to any other (`hosts.last_seen`, written by
//!   reports at least every third of the grace period) within the grace
//!   period becomes `UNREACHABLE` (its instances keep their
//!   state and claims: nothing is double-booked); when it talks again it is
//!   `READY`; command tasks that never got a result end `TASK_TIMEOUT`;
//! * **wake-ups** — on PostgreSQL, wakes this server's long polls for hosts
//!   whose desired state another server changed, and its console relays
//!   for sessions whose bytes another server wrote (`LISTEN`, see
//!   `gpucloud_store::wakeups`).

use crate::App;
use gpucloud_store::hosts::state;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// How long past its timeout a command task may stay without a result.
const TASK_GRACE_MS: i64 = 60_000;

/// Starts the reconcilers; they stop when `shutdown` turns true.
pub fn spawn(app: Arc<App>, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(capacity_loop(app.clone(), shutdown.clone())),
        tokio::spawn(liveness_loop(app.clone(), shutdown.clone())),
        tokio::spawn(wakeup_loop(app, shutdown)),
    ]
}

/// Wakes this server's long polls for the hosts whose desired state other
/// servers changed, and its console relays for other servers' bytes
/// (PostgreSQL `LISTEN`; nothing to do on SQLite).
async fn wakeup_loop(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    use gpucloud_store::wakeups::Wakeup;
    loop {
        let mut listener = match app.store.listen().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = ?e, "cannot listen for other servers' changes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        // Changes made while this server was not listening.
        app.gateway.poke_all();
        app.gateway.consoles.signal_all();
        loop {
            let next = tokio::select! {
                n = listener.next() => n,
                _ = shutdown.changed() => return,
            };
            match next {
                Ok(Wakeup::Hosts { origin, host_ids }) => {
                    if origin != app.gateway.server_id {
                        for h in &host_ids {
                            app.gateway.poke_local(h);
                        }
                    }
                }
                // Console bytes: this server's own words were signalled
                // when they were sent.
                Ok(Wakeup::Consoles { origin, words }) => {
                    if origin != app.gateway.server_id {
                        for w in &words {
                            app.gateway.consoles.signal(w);
                        }
                    }
                }
                // Listen again on a fresh connection; that wakes every poll
                // once listening, for what was missed meanwhile.
                Ok(Wakeup::Lost) => break,
                Err(e) => {
                    tracing::warn!(error = ?e, "listening for other servers' changes failed; listening again");
                    break;
                }
            }
        }
    }
}

async fn capacity_loop(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app.cfg.resync_every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = capacity_pass(&app).await {
            tracing::warn!(error = ?e, "capacity pass failed");
        }
    }
}

/// One pass of the capacity check: reload the hosts whose database
/// generation moved (claims or releases by other servers, operator changes)
/// and drop hosts that left the database.
pub async fn capacity_pass(app: &App) -> gpucloud_store::Result<()> {
    let gens = app.store.host_generations().await?;
    let (changed, gone) = app.sched.stale(&gens);
    for h in gone {
        app.sched.forget(&h);
    }
    for h in changed {
        app.sched.refresh_from(&app.store, &h).await?;
    }
    Ok(())
}

/// One pass of the liveness check. `started` is when this server started: a
/// host it has never heard from is judged from then.
pub async fn liveness_pass(app: &App, started: Instant) -> gpucloud_store::Result<()> {
    let seen: HashMap<String, Instant> = app.gateway.last_seen();
    let now = Instant::now();
    let now_ms = gpucloud_store::now_ms();
    for h in app.store.host_list().await? {
        // What this server saw, or what any server wrote, whichever is later.
        let written = now
            .checked_sub(std::time::Duration::from_millis(
                (now_ms - h.last_seen).max(0) as u64,
            ))
            .unwrap_or(started);
        let last = seen
            .get(&h.host_id)
            .copied()
            .unwrap_or(started)
            .max(written);
        let silent = now.duration_since(last);
        let live = silent < app.cfg.host_grace;
        // Conditional flips: another server may have heard from the host (or
        // flipped it) since `host_list` was read.
        let silent_since_ms = now_ms - app.cfg.host_grace.as_millis() as i64;
        let flipped = if !live && h.state == state::READY {
            let reason = format!("the host agent has not reported for {} s", silent.as_secs());
            let f = app
                .store
                .host_flip_liveness(&h.host_id, false, &reason, silent_since_ms)
                .await?;
            if f {
                tracing::warn!(host = %h.host_id, silent_s = silent.as_secs(), "host unreachable");
            }
            f
        } else if live && h.state == state::UNREACHABLE {
            let f = app
                .store
                .host_flip_liveness(&h.host_id, true, "", silent_since_ms)
                .await?;
            if f {
                tracing::info!(host = %h.host_id, "host reachable again");
            }
            f
        } else {
            false
        };
        // Another server (or a report) changed the state: catch up.
        let behind = app
            .sched
            .with_facts(|f| f.unreachable.contains_key(&h.host_id) != (h.state != state::READY));
        if flipped || behind {
            app.sched.refresh_from(&app.store, &h.host_id).await?;
        }
    }
    Ok(())
}

async fn liveness_loop(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let started = Instant::now();
    let period = (app.cfg.host_grace / 4).max(std::time::Duration::from_millis(200));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = liveness_pass(&app, started).await {
            tracing::warn!(error = ?e, "liveness pass failed");
        }
        // Commands whose result never came (host gone, agent lost them).
        match app.store.tasks_expire(TASK_GRACE_MS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "command tasks timed out without a result"),
            Err(e) => tracing::warn!(error = ?e, "expiring command tasks failed"),
        }
    }
}
