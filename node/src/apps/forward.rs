//! TCP port forwarding over QUIC streams: `forward` listens on a local TCP port and carries each
//! connection in its own stream to a port on the peer; the peer (`up`) connects to that port on
//! its loopback if it allows it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Status byte: connected.
pub const OK: u8 = 0;
/// Status byte: the port is not open to forwarding.
pub const NOT_ALLOWED: u8 = 1;
/// Status byte: nothing listens on the port.
pub const REFUSED: u8 = 2;

/// Which local ports a peer may reach.
#[derive(Debug, Clone)]
pub enum Ports {
    /// None.
    None,
    /// These.
    Only(Vec<u16>),
    /// Any.
    Any,
}

impl Ports {
    fn allows(&self, port: u16) -> bool {
        match self {
            Ports::None => false,
            Ports::Only(p) => p.contains(&port),
            Ports::Any => true,
        }
    }
}

/// Copies both ways between a TCP connection and a QUIC stream until both ends finish.
async fn splice(tcp: TcpStream, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let (mut tr, mut tw) = tcp.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut tr, &mut send).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut recv, &mut tw).await;
        let _ = tw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Server side: serves forwarded streams of `conn` to local ports in `ports`.
pub async fn serve(conn: quinn::Connection, ports: Arc<Ports>) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let ports = ports.clone();
        tokio::spawn(async move {
            let Ok(port) = recv.read_u16().await else {
                return;
            };
            if !ports.allows(port) {
                let _ = send.write_all(&[NOT_ALLOWED]).await;
                let _ = send.finish();
                return;
            }
            match TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await {
                Ok(tcp) => {
                    if send.write_all(&[OK]).await.is_ok() {
                        splice(tcp, send, recv).await;
                    }
                }
                Err(_) => {
                    let _ = send.write_all(&[REFUSED]).await;
                    let _ = send.finish();
                }
            }
        });
    }
}

/// Client side: accepts TCP connections on `listener` and carries each to `port` on the peer,
/// concurrently, until the connection to the peer ends.
pub async fn run(
    conn: quinn::Connection,
    listener: TcpListener,
    port: u16,
    mut report: impl FnMut(String),
) {
    loop {
        let (tcp, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    report(format!("accept failed: {e}"));
                    continue;
                }
            },
            e = conn.closed() => {
                report(format!("connection to the peer ended: {e}"));
                return;
            }
        };
        let conn = conn.clone();
        let mut err = report_line(from);
        tokio::spawn(async move {
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(s) => s,
                Err(e) => return err(format!("cannot open a stream: {e}")),
            };
            if send.write_u16(port).await.is_err() {
                return err("peer went away".into());
            }
            match recv.read_u8().await {
                Ok(OK) => splice(tcp, send, recv).await,
                Ok(NOT_ALLOWED) => err(format!("the peer does not allow forwarding to port {port} (start it with --forward-port {port})")),
                Ok(REFUSED) => err(format!("nothing listens on port {port} on the peer")),
                Ok(other) => err(format!("unexpected answer {other}")),
                Err(e) => err(format!("no answer from the peer: {e}")),
            }
        });
    }
}

fn report_line(from: SocketAddr) -> impl FnMut(String) {
    move |msg| eprintln!("forward {from}: {msg}")
}
