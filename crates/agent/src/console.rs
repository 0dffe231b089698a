//! The agent's end of serial-console sessions (`DescribeInstanceVncUrl`).
//!
//! The control plane lists live sessions in the desired state
//! (`DesiredState::consoles`). For each new one the agent connects to the
//! VM's serial console ([`Runtime::console`]) and relays it over the control
//! plane link ([`ControlPlane::console`]) — agents only ever dial out, so the
//! relay is a stream of short requests rather than a connection the server
//! opens:
//!
//! * the **output loop** waits for serial output, gathers what is there (up
//!   to [`MAX_CONSOLE_CHUNK`]) and sends it at once; the answer may carry
//!   input (with one server; servers relaying through their database give
//!   input only to the held exchange, to keep it in order);
//! * the **input loop** keeps one empty exchange outstanding, which the
//!   server holds (about a second) until the tenant types something.
//!
//! Input from either answer is written to the serial console. The relay ends
//! when the control plane says the session ended (the tenant closed the
//! WebSocket), refuses it, stays unreachable for [`GIVE_UP`], or when the
//! serial console closes (reported as the reason); dropping the connection
//! lets the next console client in. A VM that is not running here is
//! reported as the session's failure reason, which the tenant sees.

use crate::runtime::Runtime;
use gpucloud_agent_api::{ConsoleSpec, ConsoleUp, ControlPlane, LinkError, MAX_CONSOLE_CHUNK};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, watch, Mutex};

/// How long a relay keeps retrying an unreachable control plane.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Pause between retries.
const RETRY: Duration = Duration::from_millis(250);
/// Serial read size.
const READ_CHUNK: usize = 4096;

type Writer = Arc<Mutex<OwnedWriteHalf>>;

/// Starts relaying one session. `rt`: the runtime of the instance, `None`
/// when the instance is not on this host.
pub(crate) fn spawn(
    link: Arc<dyn ControlPlane>,
    host_id: String,
    rt: Option<Arc<dyn Runtime>>,
    spec: ConsoleSpec,
) {
    tokio::spawn(async move {
        relay(link, host_id, rt, spec).await;
    });
}

struct Relay {
    link: Arc<dyn ControlPlane>,
    host_id: String,
    session_id: String,
}

impl Relay {
    /// One exchange (retried while the control plane is unreachable); writes
    /// the input it returns. `false`: the relay is over.
    async fn step(&self, up: ConsoleUp, serial: Option<&Writer>) -> bool {
        let started = tokio::time::Instant::now();
        loop {
            match self
                .link
                .console(&self.host_id, &self.session_id, up.clone())
                .await
            {
                Ok(d) if d.ended => return false,
                Ok(d) => {
                    if d.input.is_empty() {
                        return true;
                    }
                    let Some(w) = serial else { return true };
                    let wrote = w.lock().await.write_all(&d.input).await;
                    return match wrote {
                        Ok(()) => true,
                        Err(e) => {
                            self.fail(format!("writing to the serial console failed: {e}"))
                                .await;
                            false
                        }
                    };
                }
                Err(LinkError::Refused(m)) => {
                    tracing::info!(session = %self.session_id, reason = %m, "console session refused");
                    return false;
                }
                Err(LinkError::Unreachable(m)) => {
                    if started.elapsed() >= GIVE_UP {
                        tracing::warn!(session = %self.session_id, reason = %m, "console relay gives up: control plane unreachable");
                        return false;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Ends the session with a reason the tenant sees.
    async fn fail(&self, reason: String) {
        tracing::info!(session = %self.session_id, reason = %reason, "console session cannot be served");
        let _ = self
            .link
            .console(
                &self.host_id,
                &self.session_id,
                ConsoleUp {
                    output: Vec::new(),
                    error: Some(reason),
                },
            )
            .await;
    }
}

async fn relay(
    link: Arc<dyn ControlPlane>,
    host_id: String,
    rt: Option<Arc<dyn Runtime>>,
    spec: ConsoleSpec,
) {
    let r = Arc::new(Relay {
        link,
        host_id,
        session_id: spec.session_id.clone(),
    });
    let stream = match rt {
        Some(rt) => rt.console(&spec.instance_id).await.map_err(|e| e.0),
        None => Err(format!(
            "instance {} does not run on this host",
            spec.instance_id
        )),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(reason) => {
            r.fail(reason).await;
            return;
        }
    };
    tracing::info!(session = %spec.session_id, instance = %spec.instance_id, "console session relaying");
    let (mut rd, wr) = stream.into_split();
    let wr: Writer = Arc::new(Mutex::new(wr));
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out_tx.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let output = {
        let r = r.clone();
        let wr = wr.clone();
        let stop = stop_tx.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    c = out_rx.recv() => c,
                    _ = stop_rx.changed() => return,
                };
                let Some(mut chunk) = first else {
                    r.fail("the serial console closed (the VM stopped or restarted)".into())
                        .await;
                    let _ = stop.send(true);
                    return;
                };
                while chunk.len() + READ_CHUNK <= MAX_CONSOLE_CHUNK {
                    match out_rx.try_recv() {
                        Ok(more) => chunk.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let up = ConsoleUp {
                    output: chunk,
                    error: None,
                };
                if !r.step(up, Some(&wr)).await {
                    let _ = stop.send(true);
                    return;
                }
            }
        })
    };
    let mut stop_rx2 = stop_rx.clone();
    loop {
        let go_on = tokio::select! {
            ok = r.step(ConsoleUp::default(), Some(&wr)) => ok,
            _ = stop_rx2.changed() => false,
        };
        if !go_on {
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = output.await;
    reader.abort();
    tracing::info!(session = %spec.session_id, "console session ended");
}
