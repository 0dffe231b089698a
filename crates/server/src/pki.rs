//! The cluster's certificate authority, for mutual TLS between the server
//! and host agents.
//!
//! The CA is created once and kept in the database (its key sealed with the
//! master key), so every server replica signs with the same CA. Agents pin
//! the CA by its SHA-256 (printed with every join token), fetch it, check the
//! hash, and send a certificate signing request with the token; the server
//! returns a certificate whose common name is the host ID. From then on the
//! agent authenticates with that certificate, and the server maps the
//! certificate's fingerprint to the host it was issued to.

use gpucloud_agent_api::SERVER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::time::Duration;

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation or parsing failed.
    #[error("certificate")]
    Rcgen(#[from] rcgen::Error),
    /// The store failed.
    #[error("store")]
    Store(#[from] gpucloud_store::StoreError),
    /// The stored CA is unreadable.
    #[error("the stored cluster CA is damaged: {0}")]
    Corrupt(String),
}

/// The cluster CA.
pub struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    ca_key: KeyPair,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCa {
    cert: String,
    key_sealed: String,
}

/// SHA-256 of DER bytes, as `sha256:<hex>`.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::Corrupt(e.to_string()))
}

fn validity(params: &mut CertificateParams, days: u64) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(days * 86_400)).into();
}

impl Pki {
    /// Loads the CA from the store, creating it the first time.
    pub async fn load_or_create(store: &gpucloud_store::Store) -> Result<Self, PkiError> {
        let stored = match store.setting("cluster_ca").await? {
            Some(v) => v,
            None => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "gpucloud cluster CA");
                dn.push(DnType::OrganizationName, "gpucloud");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                validity(&mut params, 3650);
                let cert = params.self_signed(&key)?;
                let v = serde_json::to_string(&StoredCa {
                    cert: cert.pem(),
                    key_sealed: store.secrets().seal(&key.serialize_pem()),
                })
                .map_err(|e| PkiError::Corrupt(e.to_string()))?;
                // Another server may have won the race: use whatever is stored.
                store.setting_init("cluster_ca", &v).await?
            }
        };
        let s: StoredCa =
            serde_json::from_str(&stored).map_err(|e| PkiError::Corrupt(e.to_string()))?;
        let key_pem = store
            .secrets()
            .open(&s.key_sealed)
            .map_err(|e| PkiError::Corrupt(e.to_string()))?;
        Ok(Self {
            ca_der: pem_to_der(&s.cert)?,
            ca_pem: s.cert,
            ca_key: KeyPair::from_pem(&key_pem)?,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The hash agents pin: `sha256:<hex>` of the CA's DER.
    pub fn ca_hash(&self) -> String {
        fingerprint(&self.ca_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key)?)
    }

    /// A server certificate for the agent endpoint, valid for
    /// [`SERVER_NAME`] (what agents check) and `names` (DNS names or IP
    /// addresses, for other clients). Returns the chain and key for rustls.
    pub fn issue_server(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, SERVER_NAME);
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(SanType::DnsName(SERVER_NAME.to_string().try_into()?));
        for n in names.iter().filter(|n| n.as_str() != SERVER_NAME) {
            match n.parse::<IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => params
                    .subject_alt_names
                    .push(SanType::DnsName(n.clone().try_into()?)),
            }
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 365);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((
            vec![
                CertificateDer::from(cert.der().to_vec()),
                CertificateDer::from(self.ca_der.clone()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs an agent's certificate request for `host_id` (the request's own
    /// names are ignored: the certificate names exactly the host). Returns the
    /// certificate PEM and its fingerprint.
    pub fn sign_agent(&self, csr_pem: &str, host_id: &str) -> Result<(String, String), PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host_id);
        dn.push(DnType::OrganizationName, "gpucloud agents");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(host_id.to_string().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 365);
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok((cert.pem(), fingerprint(cert.der())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (gpucloud_store::Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s =
            gpucloud_store::Store::connect(&url, gpucloud_store::SecretBox::from_key(&[3u8; 32]))
                .await
                .unwrap();
        (s, dir)
    }

    #[tokio::test]
    async fn the_ca_is_created_once_and_signs_agents() {
        let (s, _d) = store().await;
        let a = Pki::load_or_create(&s).await.unwrap();
        let b = Pki::load_or_create(&s).await.unwrap();
        assert_eq!(a.ca_hash(), b.ca_hash(), "the same CA on every load");
        assert!(a.ca_hash().starts_with("sha256:") && a.ca_hash().len() == 71);
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["evil-name".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let (pem, fp) = a.sign_agent(&csr, "host-abcd1234").unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(fp, fingerprint(&pem_to_der(&pem).unwrap()));
        let (chain, _) = a
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert_eq!(chain.len(), 2);
        assert!(a.sign_agent("not a csr", "host-abcd1234").is_err());
    }
}
