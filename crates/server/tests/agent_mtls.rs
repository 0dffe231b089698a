//! The agent endpoint over mutual TLS, in process: a simulated host joins
//! with a token and runs instances through the HTTPS transport; bad tokens,
//! a foreign CA, missing or unknown client certificates and a host speaking
//! for another are refused; removing a host revokes its certificate.

mod common;

use common::*;
use gpucloud_agent::remote::{self, HttpControlPlane, JoinError};
use gpucloud_agent::runtime::Runtime;
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::{ControlPlane, LinkError, ObservedState};
use gpucloud_server::pki::Pki;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

struct Endpoint {
    url: String,
    ca_hash: String,
    _stop: watch::Sender<bool>,
}

async fn endpoint(cloud: &TestCloud) -> Endpoint {
    let pki = Arc::new(Pki::load_or_create(&cloud.app.store).await.unwrap());
    let tls = gpucloud_server::agent_http::tls_config(&pki, &["127.0.0.1".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(gpucloud_server::agent_http::serve(
        cloud.app.clone(),
        pki.clone(),
        tls,
        listener,
        rx,
    ));
    Endpoint {
        // A name the certificate does not carry: agents check the cluster
        // name, not the dialled address.
        url: format!("https://localhost:{}", addr.port()),
        ca_hash: pki.ca_hash(),
        _stop: stop,
    }
}

fn sim_host() -> SimHost {
    let groups =
        gpucloud_core::simspec::parse("1*H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap();
    SimHost::expand(&groups).remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_with_a_token_and_runs_instances_over_mtls() {
    let cloud = TestCloud::start("").await;
    let ep = endpoint(&cloud).await;
    let (tenant, _) = cloud.tenant("t").await;
    let state = tempfile::tempdir().unwrap();
    let host = sim_host();
    let host_id = host.host_id();

    // Refusals first: each leaves no credentials behind.
    let used = cloud
        .app
        .store
        .join_token_create("", 60_000, 1)
        .await
        .unwrap();
    let expired = cloud.app.store.join_token_create("", -1, 1).await.unwrap();
    let cases = [
        ("gcj.nothing.here".to_string(), "token_invalid"),
        (expired, "token_expired"),
    ];
    for (token, want) in cases {
        match remote::join(&ep.url, &token, &ep.ca_hash, &host_id, state.path()).await {
            Err(JoinError::Refused { code, message }) => {
                assert_eq!(code, want, "{message}");
                assert!(
                    message.contains("join-token create"),
                    "actionable: {message}"
                );
            }
            other => panic!("{want}: {other:?}"),
        }
    }
    let wrong_ca = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        remote::join(&ep.url, &used, &wrong_ca, &host_id, state.path()).await,
        Err(JoinError::CaMismatch { .. })
    ));
    assert!(remote::Identity::load(state.path()).unwrap().is_none());

    // The real join.
    let id = remote::join(&ep.url, &used, &ep.ca_hash, &host_id, state.path())
        .await
        .unwrap();
    // The token was for one use.
    let other = tempfile::tempdir().unwrap();
    match remote::join(&ep.url, &used, &ep.ca_hash, "host-mtls0002", other.path()).await {
        Err(JoinError::Refused { code, .. }) => assert_eq!(code, "token_used"),
        r => panic!("reuse: {r:?}"),
    }
    // A fresh token cannot enrol another machine as this host (a takeover);
    // the refusal says how to re-join a host on purpose.
    let fresh = cloud
        .app
        .store
        .join_token_create("", 60_000, 1)
        .await
        .unwrap();
    match remote::join(&ep.url, &fresh, &ep.ca_hash, &host_id, other.path()).await {
        Err(JoinError::Refused { code, message }) => {
            assert_eq!(code, "host_taken");
            assert!(message.contains("--host"), "actionable: {message}");
        }
        r => panic!("takeover: {r:?}"),
    }
    assert!(remote::Identity::load(other.path()).unwrap().is_none());

    let link = Arc::new(HttpControlPlane::new(&ep.url, &id).unwrap());
    let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(
        Duration::from_millis(20),
        Duration::from_millis(20),
    ));
    let (stop, rx) = watch::channel(false);
    let agent = Agent::new(
        link.clone(),
        Arc::new(host),
        vec![rt],
        AgentOptions {
            poll_wait: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            report_delay: Duration::from_millis(2),
            retry: Duration::from_millis(100),
            inventory_every: None,
            power_check: None,
            command_journal: None,
        },
    );
    tokio::spawn(agent.run(rx));
    poll(
        "the host to register over mTLS",
        Duration::from_secs(30),
        || async {
            let h = cloud.app.store.host_get(&host_id).await.unwrap()?;
            (cloud.app.sched.with_index(|i| i.len()) == 1).then_some(h)
        },
    )
    .await;
    let ins = run_one(&tenant, "GT5.6XLARGE240").await;
    wait_state(&tenant, &ins, "RUNNING").await;

    // The certificate speaks for its own host only.
    let spoof = ObservedState {
        host_id: "host-somebody".into(),
        generation: 1,
        instances: vec![],
        commands: vec![],
    };
    match link.report(&spoof).await {
        Err(LinkError::Refused(m)) => assert!(m.contains("wrong_host"), "{m}"),
        r => panic!("spoofed report: {r:?}"),
    }

    // No client certificate: the CA and join routes answer, nothing else.
    let port: u16 = ep.url.rsplit(':').next().unwrap().parse().unwrap();
    let anon = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(id.ca_pem.as_bytes()).unwrap())
        .resolve("gpucloud-server", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let base = format!("https://gpucloud-server:{port}");
    let ca = anon
        .get(format!("{base}/agent/v1/ca"))
        .send()
        .await
        .unwrap();
    assert!(ca.status().is_success());
    let r = anon
        .post(format!("{base}/agent/v1/desired"))
        .json(&serde_json::json!({"after": 0, "wait_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("certificate_required"));

    // A certificate from another CA does not get through TLS.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign_store = gpucloud_store::Store::connect(
        &format!("sqlite://{}", foreign_dir.path().join("f.db").display()),
        gpucloud_store::SecretBox::from_key(&[4u8; 32]),
    )
    .await
    .unwrap();
    let foreign = Pki::load_or_create(&foreign_store).await.unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![host_id.clone()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let (cert, _) = foreign.sign_agent(&csr, &host_id).unwrap();
    let ident =
        reqwest::Identity::from_pem(format!("{cert}{}", key.serialize_pem()).as_bytes()).unwrap();
    let forged = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(id.ca_pem.as_bytes()).unwrap())
        .identity(ident)
        .resolve("gpucloud-server", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let r = forged
        .post(format!("{base}/agent/v1/desired"))
        .json(&serde_json::json!({"after": 0, "wait_ms": 0}))
        .send()
        .await;
    assert!(
        r.is_err(),
        "a foreign certificate must fail the handshake: {r:?}"
    );

    // Removing the host revokes the certificate (once it is empty).
    tenant
        .cvm(
            "TerminateInstances",
            serde_json::json!({"InstanceIds": [ins]}),
        )
        .await
        .unwrap();
    wait_gone(&tenant, &ins).await;
    poll("claims released", Duration::from_secs(30), || async {
        cloud.app.store.host_remove(&host_id).await.ok()
    })
    .await;
    let _ = stop.send(true);
    // Revocation takes effect within the server's short certificate cache.
    let fresh = HttpControlPlane::new(&ep.url, &id).unwrap();
    poll(
        "the certificate to be revoked",
        Duration::from_secs(30),
        || async {
            match fresh.desired(&host_id, 0, Duration::ZERO).await {
                Err(LinkError::Refused(m)) if m.contains("unknown_certificate") => Some(()),
                Err(LinkError::Refused(m)) if m.contains("not registered") => None,
                r => panic!("revoked: {r:?}"),
            }
        },
    )
    .await;
}
