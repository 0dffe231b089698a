//! Serial consoles of VM instances over WebSocket (`DescribeInstanceVncUrl`).
//!
//! # Flow
//! 1. `DescribeInstanceVncUrl` (see `api::cvm`) checks the instance (the
//!    caller's, a VM, `RUNNING`), makes a token of 32 random bytes and stores
//!    only its SHA-256 with the instance, its host, the tenant and an expiry
//!    of [`TOKEN_TTL`] (`store::consoles`). It answers
//!    `ws://<Host>/console/v1/<token>`.
//! 2. `GET /console/v1/<token>` ([`ws_handler`]) redeems the token with one
//!    conditional `UPDATE` (single use, before expiry, on any server); an
//!    unknown, used or expired token gets `404` and no upgrade. The session
//!    goes live in this server's [`ConsoleHub`], the host's generation is
//!    raised and its agent poked, so the agent's desired-state long poll
//!    answers at once with the session in `DesiredState::consoles`.
//! 3. The agent connects to the VM's serial socket and relays it with
//!    `POST /agent/v1/console/<session_id>` exchanges on its mutual-TLS link
//!    ([`ConsoleHub::exchange`]): the request carries serial output, the
//!    answer the tenant's input; with nothing to carry either way the server
//!    holds the request up to [`HOLD`]. `410 Gone` tells the agent the
//!    session ended. Only the host the session was made for may exchange.
//! 4. The WebSocket task ([`pump`]) forwards the tenant's frames (binary or
//!    text) as serial input and serial output as binary frames.
//!
//! A session ends when the WebSocket closes, when the agent reports it
//! cannot serve it (the tenant gets a text frame with the reason, then a
//! close), or when the agent has not exchanged for [`AGENT_SILENCE`] (never
//! picked up, or gone).
//!
//! # One server or several
//! With one server (SQLite) the two sides meet in memory: the exchange hands
//! output to the WebSocket task's queue and takes input from it.
//!
//! With several servers on PostgreSQL the tenant's WebSocket and the agent's
//! exchanges may reach different servers, so the bytes go through the
//! database (`gpucloud_store::consoles`): a bridge task beside the
//! WebSocket writes the tenant's input and takes the VM's output, keeps the
//! session fresh (a server that dies leaves its sessions dead after
//! [`WS_FRESH`], not live forever) and learns the agent's last exchange and
//! any failure; the exchanges, on whichever server, do the other half. Each
//! write sends a `NOTIFY` word (`in:<session>` for a held exchange,
//! `out:<session>` for the bridge) so the other side looks at once; both
//! also look on their own every [`SHARED_POLL`], since a notification is
//! only a hint. The desired state lists a host's sessions from the database,
//! whichever server it is asked of.

use crate::App;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use gpucloud_agent_api::{ConsoleDown, ConsoleSpec, ConsoleUp, MAX_CONSOLE_CHUNK};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Where console WebSockets are served (followed by the token).
pub const PATH: &str = "/console/v1/";
/// How long a console URL can be redeemed.
pub const TOKEN_TTL: Duration = Duration::from_secs(15);
/// A live session whose agent has not exchanged for this long ends.
pub const AGENT_SILENCE: Duration = Duration::from_secs(30);
/// How long an exchange that carries nothing waits for the tenant's input.
pub const HOLD: Duration = Duration::from_millis(1500);
/// How long an exchange waits for the WebSocket to take serial output.
const OUTPUT_WAIT: Duration = Duration::from_secs(10);
/// Input frames queued for the agent before the WebSocket stops reading.
const INPUT_QUEUE: usize = 256;
/// Output chunks queued for the WebSocket.
const OUTPUT_QUEUE: usize = 64;
/// Relayed through the database: a session whose WebSocket's server has not
/// marked it for this long is over.
pub const WS_FRESH: Duration = Duration::from_secs(15);
/// How often the WebSocket's server marks its sessions.
const WS_BEAT: Duration = Duration::from_secs(4);
/// Relayed through the database: how often each side looks without a
/// notification.
pub const SHARED_POLL: Duration = Duration::from_millis(500);
/// Database failures in a row after which the WebSocket side gives up.
const SHARED_FAILURES: u32 = 10;
/// The longest failure reason an agent can give the tenant.
const MAX_REASON: usize = 1024;

/// A new console token: 32 random bytes, URL-safe base64 without padding.
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A new session ID for the agent relay (not secret, not the token).
pub fn new_session_id() -> String {
    format!("cs-{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// Whether `t` looks like a token [`new_token`] makes (checked before the
/// database is asked).
pub fn token_shaped(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` can name a console session on the relay.
pub fn session_id_shaped(s: &str) -> bool {
    (4..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The console URL for a token, on the address the caller used (`Host`;
/// tccli sends it with a scheme, which is dropped). `tls`: the API front is
/// reached over TLS (`wss://`).
pub fn console_url(host: Option<&str>, tls: bool, token: &str) -> String {
    let host = host
        .map(|h| {
            h.trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
        })
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{host}{PATH}{token}")
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The tenant closed the WebSocket (or it broke).
    Closed,
    /// The relay failed; the reason is shown to the tenant.
    Failed(String),
}

/// One live session, shared by the WebSocket task and the agent's exchanges.
struct Live {
    host_id: String,
    instance_id: String,
    /// The tenant's input, taken by exchanges.
    input: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Serial output, for the WebSocket.
    output: mpsc::Sender<Vec<u8>>,
    end: watch::Sender<Option<End>>,
    /// When the agent last exchanged (initially: when the session went live).
    last_agent: Mutex<Instant>,
}

impl Live {
    /// Ends the session; the first reason wins.
    fn finish(&self, why: End) {
        self.end.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(why);
                true
            } else {
                false
            }
        });
    }

    fn is_ended(&self) -> bool {
        self.end.borrow().is_some()
    }

    fn touch(&self) {
        *self.last_agent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// The agent last exchanged at `at_ms` (Unix ms, any server).
    fn seen_at(&self, at_ms: i64) {
        let ago = Duration::from_millis((gpucloud_store::now_ms() - at_ms).max(0) as u64);
        let now = Instant::now();
        let at = now.checked_sub(ago).unwrap_or(now);
        let mut last = self.last_agent.lock().unwrap_or_else(|p| p.into_inner());
        if at > *last {
            *last = at;
        }
    }

    fn silent_for(&self) -> Duration {
        self.last_agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

type Sessions = Arc<Mutex<HashMap<String, Arc<Live>>>>;

/// The console sessions whose WebSockets are on this server, and (several
/// servers) the way to the others.
#[derive(Default)]
pub struct ConsoleHub {
    live: Sessions,
    shared: Option<Arc<Shared>>,
}

/// The relay through the database (PostgreSQL).
struct Shared {
    store: gpucloud_store::Store,
    /// Words (`in:<session>`, `out:<session>`) to `NOTIFY`.
    announce: mpsc::UnboundedSender<String>,
    /// Local waiters per word.
    signals: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl Shared {
    fn subscribe(&self, word: &str) -> watch::Receiver<()> {
        let mut map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 256 {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        map.entry(word.to_string())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    fn signal(&self, word: &str) {
        let mut map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(word) {
            if tx.send(()).is_err() {
                map.remove(word);
            }
        }
    }

    /// Wakes the waiters of `word` here and, by `NOTIFY`, on the others.
    fn announce(&self, word: String) {
        self.signal(&word);
        let _ = self.announce.send(word);
    }

    fn fresh_after() -> i64 {
        gpucloud_store::now_ms() - WS_FRESH.as_millis() as i64
    }
}

/// The WebSocket side of a live session. Dropping it ends the session.
pub struct Attached {
    session_id: String,
    live: Arc<Live>,
    sessions: Sessions,
    input: mpsc::Sender<Vec<u8>>,
    output: mpsc::Receiver<Vec<u8>>,
    end: watch::Receiver<Option<End>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.live.finish(End::Closed);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.session_id);
    }
}

/// Resolves once the session has ended.
async fn ended(rx: &mut watch::Receiver<Option<End>>) {
    loop {
        if rx.borrow_and_update().is_some() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Takes queued input without waiting, up to about one chunk.
fn drain(rx: &mut mpsc::Receiver<Vec<u8>>, buf: &mut Vec<u8>) {
    while buf.len() < MAX_CONSOLE_CHUNK {
        match rx.try_recv() {
            Ok(b) => buf.extend_from_slice(&b),
            Err(_) => break,
        }
    }
}

const ENDED: ConsoleDown = ConsoleDown {
    input: Vec::new(),
    ended: true,
};

impl ConsoleHub {
    /// A hub that relays through the database, for servers sharing one
    /// PostgreSQL database; `announce` takes the words to `NOTIFY`.
    pub fn shared(store: gpucloud_store::Store, announce: mpsc::UnboundedSender<String>) -> Self {
        Self {
            live: Sessions::default(),
            shared: Some(Arc::new(Shared {
                store,
                announce,
                signals: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// Another server relayed bytes of a session (a `NOTIFY` word).
    pub fn signal(&self, word: &str) {
        if let Some(sh) = &self.shared {
            sh.signal(word);
        }
    }

    /// Wakes every waiter here (notifications may have been missed).
    pub fn signal_all(&self) {
        if let Some(sh) = &self.shared {
            for tx in sh
                .signals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                let _ = tx.send(());
            }
        }
    }

    /// Makes a session live; the returned side belongs to the WebSocket.
    pub fn open(&self, session_id: &str, host_id: &str, instance_id: &str) -> Attached {
        let (in_tx, in_rx) = mpsc::channel(INPUT_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (end_tx, end_rx) = watch::channel(None);
        let live = Arc::new(Live {
            host_id: host_id.to_string(),
            instance_id: instance_id.to_string(),
            input: tokio::sync::Mutex::new(in_rx),
            output: out_tx,
            end: end_tx,
            last_agent: Mutex::new(Instant::now()),
        });
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session_id.to_string(), live.clone());
        if let Some(sh) = &self.shared {
            tokio::spawn(bridge(sh.clone(), session_id.to_string(), live.clone()));
        }
        Attached {
            session_id: session_id.to_string(),
            live,
            sessions: self.live.clone(),
            input: in_tx,
            output: out_rx,
            end: end_rx,
        }
    }

    /// The live sessions of a host, for its desired state: this server's,
    /// or (several servers) every server's.
    pub async fn for_host(
        &self,
        host_id: &str,
    ) -> Result<Vec<ConsoleSpec>, gpucloud_store::StoreError> {
        if let Some(sh) = &self.shared {
            return Ok(sh
                .store
                .console_live_for_host(host_id, Shared::fresh_after())
                .await?
                .into_iter()
                .map(|(session_id, instance_id)| ConsoleSpec {
                    session_id,
                    instance_id,
                })
                .collect());
        }
        let mut out: Vec<ConsoleSpec> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, l)| l.host_id == host_id && !l.is_ended())
            .map(|(id, l)| ConsoleSpec {
                session_id: id.clone(),
                instance_id: l.instance_id.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(out)
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One exchange of `host_id`'s agent for a session: hands its output to
    /// the WebSocket and returns the tenant's input. An exchange that carries
    /// no output waits up to [`HOLD`] for input. A session that is unknown
    /// here, belongs to another host or has ended answers `ended` (and a
    /// foreign host touches nothing).
    pub async fn exchange(
        &self,
        host_id: &str,
        session_id: &str,
        up: ConsoleUp,
    ) -> Result<ConsoleDown, gpucloud_store::StoreError> {
        match &self.shared {
            Some(sh) => shared_exchange(sh, host_id, session_id, up).await,
            None => Ok(self.local_exchange(host_id, session_id, up).await),
        }
    }

    async fn local_exchange(&self, host_id: &str, session_id: &str, up: ConsoleUp) -> ConsoleDown {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(session_id)
            .cloned();
        let Some(live) = live.filter(|l| l.host_id == host_id) else {
            return ENDED;
        };
        live.touch();
        if let Some(reason) = up.error {
            live.finish(End::Failed(clip(reason)));
            return ENDED;
        }
        let mut end = live.end.subscribe();
        if live.is_ended() {
            return ENDED;
        }
        let carried = !up.output.is_empty();
        if carried {
            tokio::select! {
                r = live.output.send(up.output) => {
                    if r.is_err() {
                        return ENDED;
                    }
                }
                _ = ended(&mut end) => return ENDED,
                // The tenant does not read: this output is lost, the relay goes on.
                _ = tokio::time::sleep(OUTPUT_WAIT) => {}
            }
        }
        let mut input = Vec::new();
        if carried {
            // An exchange holding for input has the queue; it will carry it.
            if let Ok(mut rx) = live.input.try_lock() {
                drain(&mut rx, &mut input);
            }
        } else {
            let mut rx = live.input.lock().await;
            drain(&mut rx, &mut input);
            if input.is_empty() {
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(b) => {
                            input = b;
                            drain(&mut rx, &mut input);
                        }
                        None => return ENDED,
                    },
                    _ = ended(&mut end) => return ENDED,
                    _ = tokio::time::sleep(HOLD) => {}
                }
            }
        }
        live.touch();
        if live.is_ended() {
            return ENDED;
        }
        ConsoleDown {
            input,
            ended: false,
        }
    }
}

/// A failure reason cut to [`MAX_REASON`] bytes.
fn clip(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// An agent's exchange, relayed through the database.
async fn shared_exchange(
    sh: &Shared,
    host_id: &str,
    session_id: &str,
    up: ConsoleUp,
) -> Result<ConsoleDown, gpucloud_store::StoreError> {
    use gpucloud_store::consoles::Put;
    let store = &sh.store;
    if let Some(reason) = up.error {
        store
            .console_agent_fail(session_id, host_id, &clip(reason))
            .await?;
        sh.announce(format!("out:{session_id}"));
        return Ok(ENDED);
    }
    if !up.output.is_empty() {
        let give_up = tokio::time::Instant::now() + OUTPUT_WAIT;
        loop {
            match store
                .console_agent_output(
                    session_id,
                    host_id,
                    Shared::fresh_after(),
                    &up.output,
                    OUTPUT_QUEUE as i64,
                )
                .await?
            {
                Put::Ended => return Ok(ENDED),
                Put::Queued => {
                    sh.announce(format!("out:{session_id}"));
                    break;
                }
                Put::Full if tokio::time::Instant::now() >= give_up => {
                    // The tenant does not read: this output is lost, the relay goes on.
                    tracing::debug!(session = %session_id, "console output dropped: the tenant does not read");
                    break;
                }
                Put::Full => tokio::time::sleep(SHARED_POLL).await,
            }
        }
        // Input goes to the exchange held for it, so it stays in order.
        return Ok(ConsoleDown {
            input: Vec::new(),
            ended: false,
        });
    }
    let word = format!("in:{session_id}");
    let mut signal = sh.subscribe(&word);
    let deadline = tokio::time::Instant::now() + HOLD;
    loop {
        signal.borrow_and_update();
        let Some(input) = store
            .console_agent_input(
                session_id,
                host_id,
                Shared::fresh_after(),
                MAX_CONSOLE_CHUNK,
            )
            .await?
        else {
            return Ok(ENDED);
        };
        let now = tokio::time::Instant::now();
        if !input.is_empty() || now >= deadline {
            return Ok(ConsoleDown {
                input,
                ended: false,
            });
        }
        let _ = tokio::time::timeout_at(deadline.min(now + SHARED_POLL), signal.changed()).await;
    }
}

/// The WebSocket's side of a session relayed through the database: writes
/// the tenant's input, takes the VM's output, keeps the session fresh and
/// learns the agent's last exchange and any failure. Ends the session in the
/// database when it ends here.
///
/// It never waits on the tenant: it takes only as much output as the
/// WebSocket's queue has room for (the rest waits in the database, where the
/// agent's exchanges stop adding after [`OUTPUT_QUEUE`] chunks), and input
/// the database has no room for ([`INPUT_QUEUE`] chunks) waits here, which
/// stops it reading the WebSocket.
async fn bridge(sh: Arc<Shared>, session_id: String, live: Arc<Live>) {
    use gpucloud_store::consoles::Put;
    let store = &sh.store;
    let mut signal = sh.subscribe(&format!("out:{session_id}"));
    let mut end = live.end.subscribe();
    let mut input = live.input.lock().await;
    let mut typed: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(SHARED_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = Instant::now();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            got = input.recv(), if typed.is_none() => {
                let Some(mut b) = got else { break };
                drain(&mut input, &mut b);
                typed = Some(b);
            }
            _ = signal.changed() => {}
            _ = tick.tick() => {}
            _ = ended(&mut end) => break,
        }
        let mut fine = true;
        if let Some(b) = &typed {
            match store
                .console_ws_input(&session_id, b, INPUT_QUEUE as i64)
                .await
            {
                Ok(Put::Queued) => {
                    typed = None;
                    sh.announce(format!("in:{session_id}"));
                }
                // Tried again on the next tick; the poll says how it ended.
                Ok(Put::Full | Put::Ended) => {}
                Err(e) => {
                    tracing::warn!(session = %session_id, error = ?e, "console input waits: database failure");
                    fine = false;
                }
            }
        }
        let heartbeat = beat.elapsed() >= WS_BEAT;
        let room = live.output.capacity();
        match store
            .console_ws_poll(&session_id, heartbeat, Shared::fresh_after(), room)
            .await
        {
            Ok(p) => {
                if heartbeat {
                    beat = Instant::now();
                }
                if let Some(at) = p.agent_seen_at {
                    live.seen_at(at);
                }
                for chunk in p.output {
                    // Room was checked, and only this task sends.
                    if live.output.try_send(chunk).is_err() {
                        tracing::debug!(session = %session_id, "console output dropped: the WebSocket is gone");
                    }
                }
                if let Some(reason) = p.ended {
                    live.finish(reason.map_or(End::Closed, End::Failed));
                    break;
                }
                if p.lapsed {
                    live.finish(End::Failed(
                        "the console session lapsed (this server could not keep it open); ask for a new console URL".into(),
                    ));
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(session = %session_id, error = ?e, "console relay: database failure");
                fine = false;
            }
        }
        failures = if fine { 0 } else { failures + 1 };
        if failures >= SHARED_FAILURES {
            live.finish(End::Failed(
                "the control plane's database failed; ask for a new console URL and retry".into(),
            ));
            break;
        }
    }
    drop(input);
    if let Err(e) = store.console_ws_close(&session_id).await {
        // Without the heartbeat the agent stops after WS_FRESH.
        tracing::warn!(session = %session_id, error = ?e, "could not end a console session in the database");
    }
    sh.announce(format!("in:{session_id}"));
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn not_found() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "console session not found: the URL is unknown, expired (15 s) or already used; ask DescribeInstanceVncUrl for a new one\n",
    )
}

/// `GET /console/v1/<token>`: redeems the token and upgrades to the console.
pub async fn ws_handler(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return plain(
            StatusCode::BAD_REQUEST,
            "this is a WebSocket endpoint: connect with a WebSocket client\n",
        );
    };
    if !token_shaped(&token) {
        return not_found();
    }
    let session = match app.store.console_session_redeem(&token).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = ?e, "console token check failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "database failure; ask for a new console URL and retry\n",
            );
        }
    };
    let attached =
        app.gateway
            .consoles
            .open(&session.session_id, &session.host_id, &session.instance_id);
    // The desired state of the host changed: wake its agent.
    if let Err(e) = app.store.console_host_bump(&session.host_id).await {
        tracing::warn!(host = %session.host_id, error = ?e, "could not raise the host generation for a console; its agent learns of it on its next poll");
    }
    app.gateway.poke(&session.host_id);
    tracing::info!(app_id = session.app_id, instance = %session.instance_id, host = %session.host_id, session = %session.session_id, "console session opened");
    upgrade
        .max_message_size(MAX_CONSOLE_CHUNK)
        .on_upgrade(move |ws| pump(ws, attached))
}

/// Relays one WebSocket until either side ends.
pub async fn pump(mut ws: WebSocket, mut a: Attached) {
    let mut pending: Option<Vec<u8>> = None;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            msg = ws.recv(), if pending.is_none() => match msg {
                Some(Ok(Message::Binary(b))) => pending = Some(b.to_vec()),
                Some(Ok(Message::Text(t))) => pending = Some(t.as_str().as_bytes().to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Closed,
            },
            permit = a.input.reserve(), if pending.is_some() => match permit {
                Ok(p) => {
                    if let Some(b) = pending.take() {
                        p.send(b);
                    }
                }
                Err(_) => break End::Closed,
            },
            out = a.output.recv() => match out {
                Some(b) => {
                    if ws.send(Message::Binary(b.into())).await.is_err() {
                        break End::Closed;
                    }
                }
                None => break End::Closed,
            },
            _ = ended(&mut a.end) => {
                break a.end.borrow().clone().unwrap_or(End::Closed);
            }
            _ = check.tick() => {
                if a.live.silent_for() >= AGENT_SILENCE {
                    break End::Failed(format!(
                        "the host agent did not relay the console for {} s; the host may be unreachable",
                        AGENT_SILENCE.as_secs()
                    ));
                }
            }
        }
    };
    a.live.finish(why.clone());
    if let End::Failed(reason) = &why {
        // What the VM printed before the failure, then why.
        while let Ok(b) = a.output.try_recv() {
            if ws.send(Message::Binary(b.into())).await.is_err() {
                break;
            }
        }
        tracing::info!(session = %a.session_id, reason = %reason, "console session failed");
        let _ = ws.send(Message::Text(reason.clone().into())).await;
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: close_code::ERROR,
                reason: "console relay failed".into(),
            })))
            .await;
    } else {
        tracing::info!(session = %a.session_id, "console session closed");
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: "console session ended".into(),
            })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_random_url_safe_bytes() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(token_shaped(&a), "{a}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(!token_shaped("short"));
        assert!(!token_shaped(&format!("{}/", &a[..42])));
        assert!(session_id_shaped(&new_session_id()));
        assert!(!session_id_shaped("../etc"));
    }

    #[test]
    fn urls_use_the_callers_host() {
        assert_eq!(
            console_url(Some("127.0.0.1:8080"), false, "T"),
            "ws://127.0.0.1:8080/console/v1/T"
        );
        // tccli sends the scheme in Host.
        assert_eq!(
            console_url(Some("http://127.0.0.1:8080"), false, "T"),
            "ws://127.0.0.1:8080/console/v1/T"
        );
        assert_eq!(
            console_url(Some("cvm.example.com"), true, "T"),
            "wss://cvm.example.com/console/v1/T"
        );
        assert_eq!(
            console_url(Some("evil.com/x?y=<script>"), false, "T"),
            "ws://localhost/console/v1/T"
        );
        assert_eq!(console_url(None, false, "T"), "ws://localhost/console/v1/T");
    }

    #[tokio::test]
    async fn input_goes_to_the_owning_host_only_and_output_to_the_websocket() {
        let hub = ConsoleHub::default();
        let mut a = hub.open("cs-1", "host-a", "ins-a");
        assert_eq!(hub.for_host("host-a").await.unwrap().len(), 1);
        assert!(hub.for_host("host-b").await.unwrap().is_empty());
        a.input.send(b"hello\n".to_vec()).await.unwrap();
        // Another host learns nothing and takes nothing.
        let d = hub
            .exchange("host-b", "cs-1", ConsoleUp::default())
            .await
            .unwrap();
        assert!(d.ended && d.input.is_empty());
        let d = hub
            .exchange(
                "host-a",
                "cs-1",
                ConsoleUp {
                    output: b"login: ".to_vec(),
                    error: None,
                },
            )
            .await
            .unwrap();
        assert!(!d.ended);
        assert_eq!(d.input, b"hello\n");
        assert_eq!(a.output.recv().await.unwrap(), b"login: ");
        // An unknown session is over for the agent.
        assert!(
            hub.exchange("host-a", "cs-x", ConsoleUp::default())
                .await
                .unwrap()
                .ended
        );
    }

    #[tokio::test]
    async fn a_held_exchange_returns_with_input_and_sessions_end() {
        let hub = Arc::new(ConsoleHub::default());
        let mut a = hub.open("cs-1", "host-a", "ins-a");
        let h = hub.clone();
        let held = tokio::spawn(async move {
            h.exchange("host-a", "cs-1", ConsoleUp::default())
                .await
                .unwrap()
        });
        tokio::task::yield_now().await;
        a.input.send(b"x".to_vec()).await.unwrap();
        let d = held.await.unwrap();
        assert_eq!(d.input, b"x");
        // The agent reports a failure: the WebSocket side learns why.
        let d = hub
            .exchange(
                "host-a",
                "cs-1",
                ConsoleUp {
                    output: vec![],
                    error: Some("instance ins-a is not running".into()),
                },
            )
            .await
            .unwrap();
        assert!(d.ended);
        ended(&mut a.end).await;
        assert_eq!(
            *a.end.borrow(),
            Some(End::Failed("instance ins-a is not running".into()))
        );
        assert!(hub.for_host("host-a").await.unwrap().is_empty());
        // Dropping the WebSocket side forgets the session.
        drop(a);
        assert!(hub.is_empty());
    }
}
