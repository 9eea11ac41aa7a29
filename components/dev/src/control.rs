//! The supervisor's control channel: newline-delimited JSON over an abstract unix socket, one
//! request and one response per connection. `capstan dev status|kill|restart|down` use it.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{
    SocketAddr as UnixAddr, UnixListener as StdUnixListener, UnixStream as StdUnixStream,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::DevError;
use crate::paths::ClusterPaths;
use crate::supervisor::ClusterSnapshot;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Status,
    Kill { node: String },
    Restart { node: String },
    Down,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Ok,
    Status(Box<ClusterSnapshot>),
    Error(String),
}

/// Binds the control socket; fails if another supervisor holds it (the cluster is up).
pub fn listen(paths: &ClusterPaths) -> Result<UnixListener, DevError> {
    let addr =
        UnixAddr::from_abstract_name(paths.control_name().as_bytes()).map_err(DevError::Control)?;
    let listener = StdUnixListener::bind_addr(&addr).map_err(|_| DevError::AlreadyUp {
        state_dir: paths.root().to_path_buf(),
    })?;
    listener.set_nonblocking(true).map_err(DevError::Control)?;
    UnixListener::from_std(listener).map_err(DevError::Control)
}

/// Answers requests by handing them to the supervise loop.
pub async fn serve(
    listener: UnixListener,
    requests: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) => {
                    let (tx, rx) = oneshot::channel();
                    if requests.send((req, tx)).await.is_err() {
                        return;
                    }
                    rx.await
                        .unwrap_or(Response::Error("the supervisor is stopping".into()))
                }
                Err(e) => Response::Error(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_vec(&response).expect("a response always serialises");
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Sends one request to the cluster's supervisor.
pub async fn call(paths: &ClusterPaths, request: &Request) -> Result<Response, DevError> {
    let addr =
        UnixAddr::from_abstract_name(paths.control_name().as_bytes()).map_err(DevError::Control)?;
    let stream = StdUnixStream::connect_addr(&addr).map_err(|_| DevError::NotUp {
        state_dir: paths.root().to_path_buf(),
    })?;
    stream.set_nonblocking(true).map_err(DevError::Control)?;
    let stream = UnixStream::from_std(stream).map_err(DevError::Control)?;
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(request).expect("a request always serialises");
    out.push(b'\n');
    write.write_all(&out).await.map_err(DevError::Control)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(DevError::Control)?;
    serde_json::from_str(&line).map_err(|e| DevError::Control(std::io::Error::other(e)))
}
