//! An upgraded connection (exec, attach, port-forward) carried on one `Proxy` stream, once
//! the far end has answered 101: `data` both ways is the connection's bytes, the cell's
//! `end_of_body` is the client closing its side, and the agent ending the stream is the far
//! end closing. The far end closing ends the connection; the client closing its side only
//! stops what it sends (the far end may still answer, as over TCP).
//!
//! Written here rather than with `tokio::io::copy_bidirectional`: one side of each bridge
//! is a gRPC stream of messages, not a byte stream.

use lattice_proto::tunnel::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::forward::{CHUNK, Upgraded};

/// The most bytes one read of a connection carries into one message.
const READ_BUFFER: usize = 64 << 10;

fn down_message(body: pb::proxy_down::Body) -> Result<pb::ProxyDown, Status> {
    Ok(pb::ProxyDown { body: Some(body) })
}

/// The cell's side: `local` is the connection the proxy hands its client's bytes to; `up`
/// and `down` are the agent's stream. Returns when the far end has closed, the client has
/// gone, or the stream broke; dropping `down` then ends the stream at the agent.
pub(crate) async fn at_cell(
    local: tokio::io::DuplexStream,
    mut up: Streaming<pb::ProxyUp>,
    down: mpsc::Sender<Result<pb::ProxyDown, Status>>,
) {
    let (mut read, mut write) = tokio::io::split(local);
    let client_to_agent = async {
        let mut buffer = vec![0u8; READ_BUFFER.min(CHUNK)];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    let _ = down
                        .send(down_message(pb::proxy_down::Body::EndOfBody(true)))
                        .await;
                    return;
                }
                Ok(n) => {
                    let data = pb::proxy_down::Body::Data(buffer[..n].to_vec());
                    if down.send(down_message(data)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let agent_to_client = async {
        loop {
            match up.message().await {
                Ok(Some(pb::ProxyUp {
                    body: Some(pb::proxy_up::Body::Data(data)),
                })) => {
                    if write.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Ok(Some(pb::ProxyUp {
                    body: Some(pb::proxy_up::Body::Abort(why)),
                })) => {
                    tracing::debug!(%why, "an upgraded connection broke off at the agent");
                    return;
                }
                // The far end closed; anything else mid-connection breaks the protocol,
                // and the connection ends either way.
                _ => return,
            }
        }
    };
    run_until_far_end_closes(agent_to_client, client_to_agent).await;
    let _ = write.shutdown().await;
}

/// The agent's side: `far` is the connection to the API server (or to the next hop's
/// proxy); `down` and `up` are the cell's stream. Returns when the far end has closed, or
/// the cell has gone (its client hung up); dropping `up` and `far` then closes both.
pub(crate) async fn at_agent(
    far: Upgraded,
    down: &mut Streaming<pb::ProxyDown>,
    up: &mpsc::Sender<pb::ProxyUp>,
) {
    let (mut read, mut write) = tokio::io::split(far);
    let far_to_cell = async {
        let mut buffer = vec![0u8; READ_BUFFER.min(CHUNK)];
        loop {
            let body = match read.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => pb::proxy_up::Body::Data(buffer[..n].to_vec()),
                Err(e) => pb::proxy_up::Body::Abort(e.to_string()),
            };
            let last = matches!(body, pb::proxy_up::Body::Abort(_));
            if up.send(pb::ProxyUp { body: Some(body) }).await.is_err() || last {
                return;
            }
        }
    };
    let cell_to_far = async {
        loop {
            match down.message().await {
                Ok(Some(pb::ProxyDown {
                    body: Some(pb::proxy_down::Body::Data(data)),
                })) => {
                    if write.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Ok(Some(pb::ProxyDown {
                    body: Some(pb::proxy_down::Body::EndOfBody(_)),
                })) => {
                    // The client closed its side; the far end may still answer.
                    let _ = write.shutdown().await;
                    std::future::pending::<()>().await;
                }
                // The cell hung up, or broke the protocol: the connection is over.
                _ => return,
            }
        }
    };
    tokio::select! {
        () = far_to_cell => {}
        () = cell_to_far => {}
    }
}

/// Runs both directions until `far_to_near` ends (the far end closed) or `near_to_far`
/// ends without the near side only half-closing.
async fn run_until_far_end_closes(
    far_to_near: impl std::future::Future<Output = ()>,
    near_to_far: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(far_to_near);
    tokio::select! {
        () = &mut far_to_near => {}
        // The client's side ended (EOF said as end_of_body, or the stream gone): what the
        // far end still sends is delivered until it closes.
        () = near_to_far => far_to_near.await,
    }
}
