//! The agent's side of the network transport: joining the cluster and the
//! [`ControlPlane`] over HTTPS with mutual TLS.
//!
//! # Joining
//! An operator creates a join token on the server (`gpucloud admin join-token
//! create`), which prints the token and the SHA-256 of the cluster CA. The
//! agent then
//! 1. fetches the CA certificate without trusting anything yet and checks it
//!    against the pinned hash — a server that cannot show the right CA gets
//!    nothing, not even the token;
//! 2. makes its own key pair (it never leaves the host) and sends a
//!    certificate request with the token over TLS verified against that CA;
//! 3. keeps `ca.crt`, `agent.crt` and `agent.key` (0600) in its state
//!    directory and from then on authenticates with the certificate.
//!
//! The server's certificate is checked against the cluster CA and the fixed
//! name [`SERVER_NAME`], whatever address the agent dials.

use gpucloud_agent_api::{
    paths, AgentApiError, ConsoleDown, ConsoleUp, ControlPlane, DesiredRequest, DesiredState,
    HostInventory, JoinRequest, JoinResponse, LinkError, ObservedState, CONSOLE_ERROR_HEADER,
    SERVER_NAME,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// File names in the agent's state directory.
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "agent.crt";
const KEY_FILE: &str = "agent.key";

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The server could not be reached.
    #[error("cannot reach the gpucloud server at {url}: {reason}")]
    Unreachable {
        /// What was dialled.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The server's CA is not the pinned one.
    #[error("the server at {url} shows CA {got}, not the pinned {want}; check --ca-hash (printed by `gpucloud admin join-token create`) — someone may be intercepting the connection")]
    CaMismatch {
        /// What was dialled.
        url: String,
        /// Pinned hash.
        want: String,
        /// Hash the server showed.
        got: String,
    },
    /// The server refused the join.
    #[error("the server refused to join this host ({code}): {message}")]
    Refused {
        /// Stable code (`token_expired` …).
        code: String,
        /// What to do.
        message: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// Local files.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's credentials.
#[derive(Clone)]
pub struct Identity {
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// The agent's certificate (PEM).
    pub cert_pem: String,
    /// The agent's private key (PEM).
    key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JoinError {
    let what = what.into();
    move |source| JoinError::Io { what, source }
}

impl Identity {
    /// Loads the credentials kept in `dir`, if the agent joined before.
    pub fn load(dir: &Path) -> Result<Option<Self>, JoinError> {
        let read = |f: &str| -> Result<Option<String>, JoinError> {
            match std::fs::read_to_string(dir.join(f)) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(format!("reading {}", dir.join(f).display()))(e)),
            }
        };
        match (read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?) {
            (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Ok(Some(Self {
                ca_pem,
                cert_pem,
                key_pem,
            })),
            _ => Ok(None),
        }
    }

    fn save(&self, dir: &Path) -> Result<(), JoinError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        write_private(&dir.join(KEY_FILE), &self.key_pem)?;
        write_private(&dir.join(CERT_FILE), &self.cert_pem)?;
        write_private(&dir.join(CA_FILE), &self.ca_pem)?;
        Ok(())
    }

    /// SHA-256 of the CA, `sha256:<hex>`.
    pub fn ca_hash(&self) -> Result<String, JoinError> {
        Ok(hash_of(&ca_der(&self.ca_pem)?))
    }
}

/// Writes a file only the owner can read, atomically.
fn write_private(path: &Path, text: &str) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("writing {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}

fn hash_of(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

fn ca_der(pem: &str) -> Result<CertificateDer<'static>, JoinError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| JoinError::Invalid(format!("the CA certificate is not PEM: {e}")))
}

/// `sha256:<64 hex>` (the `sha256:` prefix optional), lower-cased.
pub fn normalize_ca_hash(h: &str) -> Result<String, JoinError> {
    let hex_part = h.trim().strip_prefix("sha256:").unwrap_or(h.trim());
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(JoinError::Invalid(format!(
            "--ca-hash `{h}` is not a SHA-256 (sha256:<64 hex digits>, as `gpucloud admin join-token create` prints)"
        )));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the server's chain against the cluster CA and the name
/// [`SERVER_NAME`], not the dialled address.
#[derive(Debug)]
struct ClusterVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(SERVER_NAME).map_err(|_| {
            rustls::Error::General("the cluster server name is not a DNS name".into())
        })?;
        self.0
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any server: only for fetching the CA, which is then checked
/// against the pinned hash before anything is sent.
#[derive(Debug)]
struct FetchOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for FetchOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_error(e: impl std::fmt::Display) -> JoinError {
    JoinError::Invalid(format!("TLS setup: {e}"))
}

/// A TLS client configuration that trusts the cluster CA, optionally
/// presenting the agent's certificate.
fn client_config(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, JoinError> {
    let p = provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca_der(ca_pem)?).map_err(tls_error)?;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), p.clone())
        .build()
        .map_err(tls_error)?;
    let builder = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterVerifier(inner)));
    let mut cfg = match client {
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| JoinError::Invalid(format!("agent certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| JoinError::Invalid(format!("agent key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(tls_error)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn http(tls: rustls::ClientConfig) -> Result<reqwest::Client, JoinError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Duration::from_secs(15))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(tls_error)
}

fn base_url(server: &str) -> Result<String, JoinError> {
    let u = url::Url::parse(server).map_err(|e| {
        JoinError::Invalid(format!(
            "--server `{server}` is not a URL ({e}); it looks like https://10.0.0.1:8443"
        ))
    })?;
    if u.scheme() != "https" || u.host().is_none() {
        return Err(JoinError::Invalid(format!(
            "--server `{server}` must be an https:// URL with a host, like https://10.0.0.1:8443"
        )));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

/// Joins the cluster at `server` with a join token, unless `dir` already
/// holds credentials. Returns the credentials.
pub async fn join(
    server: &str,
    token: &str,
    ca_hash: &str,
    host_id: &str,
    dir: &Path,
) -> Result<Identity, JoinError> {
    let base = base_url(server)?;
    let want = normalize_ca_hash(ca_hash)?;
    // 1. The CA, checked against the pin.
    let fetch = {
        let p = provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FetchOnly(p)))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        http(cfg)?
    };
    let unreachable = |e: reqwest::Error| JoinError::Unreachable {
        url: base.clone(),
        reason: crate::remote::error_chain(&e),
    };
    let resp = fetch
        .get(format!("{base}{}", paths::CA))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(JoinError::Unreachable {
            url: base.clone(),
            reason: format!("GET {} answered {}", paths::CA, resp.status()),
        });
    }
    let ca_pem = resp.text().await.map_err(unreachable)?;
    let got = hash_of(&ca_der(&ca_pem)?);
    if got != want {
        return Err(JoinError::CaMismatch {
            url: base,
            want,
            got,
        });
    }
    // 2. A key of our own, and the certificate for it.
    let key = rcgen::KeyPair::generate()
        .map_err(|e| JoinError::Invalid(format!("generating the agent key: {e}")))?;
    let csr = rcgen::CertificateParams::new(vec![host_id.to_string()])
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| JoinError::Invalid(format!("building the certificate request: {e}")))?;
    let client = http(client_config(&ca_pem, None)?)?;
    let request = JoinRequest {
        token: token.trim().to_string(),
        host_id: host_id.to_string(),
        csr_pem: csr,
    };
    // A server that cannot reach its database answers 503 and has used
    // nothing (the join is one transaction): try again a few times.
    let mut attempt = 0u32;
    let resp = loop {
        let resp = client
            .post(format!("{base}{}", paths::JOIN))
            .json(&request)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE || attempt >= 5 {
            break resp;
        }
        attempt += 1;
        tracing::warn!(attempt, "the server could not complete the join; retrying");
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt - 1)).await;
    };
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let e: AgentApiError = serde_json::from_str(&body).unwrap_or(AgentApiError {
            code: status.as_u16().to_string(),
            message: body,
        });
        return Err(JoinError::Refused {
            code: e.code,
            message: e.message,
        });
    }
    let joined: JoinResponse = resp.json().await.map_err(unreachable)?;
    if hash_of(&ca_der(&joined.ca_pem)?) != want {
        return Err(JoinError::CaMismatch {
            url: base,
            want,
            got: hash_of(&ca_der(&joined.ca_pem)?),
        });
    }
    let id = Identity {
        ca_pem: joined.ca_pem,
        cert_pem: joined.cert_pem,
        key_pem: key.serialize_pem(),
    };
    id.save(dir)?;
    Ok(id)
}

/// `sha256:<hex>` of the first certificate in a PEM text.
pub fn cert_fingerprint(pem: &str) -> Option<String> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|d| hash_of(&d))
}

/// An error and its sources on one line (reqwest hides the interesting part).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The control plane over HTTPS with mutual TLS.
pub struct HttpControlPlane {
    http: reqwest::Client,
    base: String,
}

impl HttpControlPlane {
    /// A link to `server` authenticated as `id`.
    pub fn new(server: &str, id: &Identity) -> Result<Self, JoinError> {
        Ok(Self {
            http: http(client_config(
                &id.ca_pem,
                Some((&id.cert_pem, &id.key_pem)),
            )?)?,
            base: base_url(server)?,
        })
    }

    async fn post<B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<reqwest::Response, LinkError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<AgentApiError>(&text)
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_else(|_| format!("HTTP {status}: {text}"));
        if status.is_client_error() {
            Err(LinkError::Refused(msg))
        } else {
            Err(LinkError::Unreachable(msg))
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for HttpControlPlane {
    async fn register(&self, inventory: &HostInventory) -> Result<(), LinkError> {
        self.post(paths::REGISTER, inventory, Duration::from_secs(30))
            .await
            .map(drop)
    }

    async fn desired(
        &self,
        _host_id: &str,
        after: i64,
        wait: Duration,
    ) -> Result<DesiredState, LinkError> {
        let req = DesiredRequest {
            after,
            wait_ms: wait.as_millis() as u64,
        };
        let resp = self
            .post(paths::DESIRED, &req, wait + Duration::from_secs(15))
            .await?;
        resp.json()
            .await
            .map_err(|e| LinkError::Unreachable(format!("desired state: {}", error_chain(&e))))
    }

    async fn report(&self, observed: &ObservedState) -> Result<(), LinkError> {
        self.post(paths::REPORT, observed, Duration::from_secs(30))
            .await
            .map(drop)
    }

    async fn console(
        &self,
        _host_id: &str,
        session_id: &str,
        up: ConsoleUp,
    ) -> Result<ConsoleDown, LinkError> {
        let mut req = self
            .http
            .post(format!("{}{}{session_id}", self.base, paths::CONSOLE))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(Duration::from_secs(20));
        if let Some(e) = &up.error {
            req = req.header(CONSOLE_ERROR_HEADER, header_text(e));
        }
        let resp = req
            .body(up.output)
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            let input = resp
                .bytes()
                .await
                .map_err(|e| LinkError::Unreachable(format!("console: {}", error_chain(&e))))?;
            return Ok(ConsoleDown {
                input: input.to_vec(),
                ended: false,
            });
        }
        if status == reqwest::StatusCode::GONE || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(ConsoleDown {
                input: Vec::new(),
                ended: true,
            });
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = format!("console: HTTP {status}: {text}");
        if status.is_client_error() {
            Err(LinkError::Refused(msg))
        } else {
            Err(LinkError::Unreachable(msg))
        }
    }
}

/// A reason as a header value: printable ASCII, at most 512 characters.
fn header_text(s: &str) -> String {
    s.chars()
        .take(512)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_hashes_are_normalised_or_refused() {
        let h = "AB".repeat(32);
        assert_eq!(
            normalize_ca_hash(&h).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        assert_eq!(
            normalize_ca_hash(&format!("sha256:{h}")).unwrap(),
            normalize_ca_hash(&h).unwrap()
        );
        assert!(normalize_ca_hash("sha256:1234").is_err());
        assert!(normalize_ca_hash(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn console_reasons_fit_in_a_header() {
        assert_eq!(
            header_text("VM ins-a: not running"),
            "VM ins-a: not running"
        );
        assert_eq!(header_text("héllo\nx"), "h?llo?x");
        assert_eq!(header_text(&"a".repeat(600)).len(), 512);
    }

    #[test]
    fn server_urls_must_be_https() {
        assert_eq!(
            base_url("https://10.0.0.1:8443/").unwrap(),
            "https://10.0.0.1:8443"
        );
        assert!(base_url("http://10.0.0.1:8443").is_err());
        assert!(base_url("10.0.0.1:8443").is_err());
    }

    #[test]
    fn credentials_are_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(Identity::load(dir.path()).unwrap().is_none());
        let id = Identity {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        id.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.cert_pem, "cert");
        assert!(
            !format!("{back:?}").contains("key\""),
            "the key is never printed"
        );
    }
}
