//! The agent endpoint: the agent protocol over HTTPS with mutual TLS.
//!
//! | Route | Client certificate | What |
//! |---|---|---|
//! | `GET /agent/v1/ca` | no | the CA certificate (agents check it against the pinned hash) |
//! | `POST /agent/v1/join` | no | join token + CSR → certificate for the host |
//! | `POST /agent/v1/register` | yes | inventory |
//! | `POST /agent/v1/desired` | yes | long poll for desired state |
//! | `POST /agent/v1/report` | yes | observed state |
//! | `POST /agent/v1/console/<session>` | yes | one serial-console relay exchange (raw bytes both ways; `410` once ended) |
//!
//! TLS accepts connections without a client certificate (joining needs
//! that), but every route past joining requires one signed by the cluster CA
//! *and* recorded at join: the certificate's fingerprint names the host, and
//! a host may only speak for itself.

use crate::pki::{fingerprint, Pki};
use crate::App;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gpucloud_agent_api::{
    paths, AgentApiError, ConsoleUp, ControlPlane, DesiredRequest, HostInventory, JoinRequest,
    JoinResponse, LinkError, ObservedState, CONSOLE_ERROR_HEADER,
};
use gpucloud_api_types::ids::{is_valid, IdKind};
use gpucloud_store::agents::TokenRefusal;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a certificate→host mapping is trusted without the database: a
/// removed host's certificate stops working within this time.
const CERT_CACHE_TTL: Duration = Duration::from_secs(5);

/// Longest long poll an agent may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct AgentState {
    app: Arc<App>,
    pki: Arc<Pki>,
    ids: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

/// The client certificate of a connection, if any.
#[derive(Clone, Debug)]
struct Peer(Option<String>);

fn fail(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(AgentApiError {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn link_fail(e: LinkError) -> Response {
    match e {
        LinkError::Refused(m) => fail(StatusCode::FORBIDDEN, "refused", m),
        LinkError::Unreachable(m) => fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
    }
}

impl AgentState {
    /// The host a connection speaks for.
    async fn host_of(&self, peer: &Peer) -> Result<String, Response> {
        let Some(fp) = &peer.0 else {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "certificate_required",
                "this endpoint needs the agent's client certificate; join first with a token",
            ));
        };
        if let Some((h, at)) = self.ids.lock().unwrap_or_else(|p| p.into_inner()).get(fp) {
            if at.elapsed() < CERT_CACHE_TTL {
                return Ok(h.clone());
            }
        }
        match self.app.store.agent_cert_host(fp).await {
            Ok(Some(h)) => {
                self.ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fp.clone(), (h.clone(), Instant::now()));
                Ok(h)
            }
            Ok(None) => Err(fail(
                StatusCode::FORBIDDEN,
                "unknown_certificate",
                "this certificate was not issued to any host (or the host was removed); join again",
            )),
            Err(e) => {
                tracing::error!(error = ?e, "certificate lookup failed");
                Err(fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "database failure; retry",
                ))
            }
        }
    }
}

async fn ca(State(s): State<AgentState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        s.pki.ca_pem().to_string(),
    )
}

async fn join(State(s): State<AgentState>, Json(req): Json<JoinRequest>) -> Response {
    if !is_valid(IdKind::Host, &req.host_id) {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_host_id",
            "host IDs look like host-xxxxxxxx",
        );
    }
    // Signed first (no state), then token and certificate in one
    // transaction: a refusal or failure leaves nothing behind.
    let (cert_pem, fp) = match s.pki.sign_agent(&req.csr_pem, &req.host_id) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "bad_csr",
                format!("the certificate request cannot be signed: {e}"),
            )
        }
    };
    match s.app.store.join_host(&req.token, &fp, &req.host_id).await {
        Ok(Ok(())) => {}
        Ok(Err(r)) => {
            let (code, msg) = match r {
                TokenRefusal::Invalid => ("token_invalid", "the join token is not valid; create one with `gpucloud admin join-token create`".to_string()),
                TokenRefusal::Expired => ("token_expired", "the join token has expired; create a new one with `gpucloud admin join-token create`".to_string()),
                TokenRefusal::UsedUp => ("token_used", "the join token was used as often as it allows, or revoked; create a new one".to_string()),
                TokenRefusal::WrongHost => ("token_wrong_host", format!("this join token was issued for another host, not {}", req.host_id)),
                TokenRefusal::HostTaken => ("host_taken", format!(
                    "host {} already joined this cluster; to re-join it (a reinstalled machine, a lost certificate) create a token for it with `gpucloud admin join-token create --host {}`, or remove the host first",
                    req.host_id, req.host_id
                )),
            };
            tracing::warn!(host = %req.host_id, code, "join refused");
            return fail(StatusCode::UNAUTHORIZED, code, msg);
        }
        Err(e) => {
            tracing::error!(error = ?e, "joining a host failed in the database");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "database failure; retry",
            );
        }
    }
    tracing::info!(host = %req.host_id, "host agent joined");
    Json(JoinResponse {
        cert_pem,
        ca_pem: s.pki.ca_pem().to_string(),
    })
    .into_response()
}

async fn register(
    State(s): State<AgentState>,
    Extension(peer): Extension<Peer>,
    Json(mut inv): Json<HostInventory>,
) -> Response {
    let host = match s.host_of(&peer).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    if inv.host_id != host {
        return fail(
            StatusCode::FORBIDDEN,
            "wrong_host",
            format!("this certificate belongs to {host}, not {}", inv.host_id),
        );
    }
    if inv.zone.is_empty() {
        inv.zone = s.app.cfg.default_zone.clone();
    }
    let zone_ok =
        gpucloud_core::region::Zone::parse(&inv.zone).is_some_and(|z| z.region == s.app.cfg.region);
    if !zone_ok {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_zone",
            format!(
                "zone `{}` is not a zone of region {} (zones look like {}); start the agent with --zone",
                inv.zone, s.app.cfg.region, s.app.cfg.default_zone
            ),
        );
    }
    match s.app.gateway.register(&inv).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => link_fail(e),
    }
}

async fn desired(
    State(s): State<AgentState>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<DesiredRequest>,
) -> Response {
    let host = match s.host_of(&peer).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let wait = Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    match s.app.gateway.desired(&host, req.after, wait).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => link_fail(e),
    }
}

async fn report(
    State(s): State<AgentState>,
    Extension(peer): Extension<Peer>,
    Json(obs): Json<ObservedState>,
) -> Response {
    let host = match s.host_of(&peer).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    if obs.host_id != host {
        return fail(
            StatusCode::FORBIDDEN,
            "wrong_host",
            format!("this certificate belongs to {host}, not {}", obs.host_id),
        );
    }
    match s.app.gateway.report(&obs).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => link_fail(e),
    }
}

/// One console relay exchange: the body is serial output, the answer the
/// tenant's input; `410 Gone` once the session ended (or is not this host's).
async fn console(
    State(s): State<AgentState>,
    Extension(peer): Extension<Peer>,
    Path(session_id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let host = match s.host_of(&peer).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    if !crate::console::session_id_shaped(&session_id) {
        return fail(
            StatusCode::NOT_FOUND,
            "console_ended",
            "no such console session",
        );
    }
    let up = ConsoleUp {
        output: body.to_vec(),
        error: headers.get(CONSOLE_ERROR_HEADER).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(512)
                .collect()
        }),
    };
    match s.app.gateway.console(&host, &session_id, up).await {
        Ok(d) if d.ended => fail(
            StatusCode::GONE,
            "console_ended",
            "the console session ended; close the serial connection",
        ),
        Ok(d) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            d.input,
        )
            .into_response(),
        Err(e) => link_fail(e),
    }
}

/// The TLS configuration of the agent endpoint.
pub fn tls_config(pki: &Pki, names: &[String]) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der().to_vec()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (chain, key) = pki.issue_server(names)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves the agent endpoint on `listener` until `shutdown` turns true.
pub async fn serve(
    app: Arc<App>,
    pki: Arc<Pki>,
    tls: rustls::ServerConfig,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = AgentState {
        app,
        pki,
        ids: Arc::default(),
    };
    let router = Router::new()
        .route(paths::CA, get(ca))
        .route(paths::JOIN, post(join))
        .route(paths::REGISTER, post(register))
        .route(paths::DESIRED, post(desired))
        .route(paths::REPORT, post(report))
        .route(&format!("{}{{session_id}}", paths::CONSOLE), post(console))
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(state);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "agent endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let peer = Peer(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| fingerprint(c)),
            );
            let svc = hyper_util::service::TowerToHyperService::new(router.layer(Extension(peer)));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %addr, error = %e, "agent connection ended");
                    }
                }
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
