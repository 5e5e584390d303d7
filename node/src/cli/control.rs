//! The control socket of a running `up`: a Unix socket (mode 0600) that answers one request per
//! connection: `json\n` or `text\n`, answered with the candidate and pair table.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use shipworm::engine::Diagnostics;

/// Gets the current table.
pub type StatusFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<Diagnostics>> + Send>> + Send + Sync>;

/// The default control socket: beside the identity file.
pub fn default_path(identity: &Path) -> PathBuf {
    identity
        .parent()
        .unwrap_or(Path::new("."))
        .join("shipworm.sock")
}

/// Serves the control socket at `path` until the task is dropped.
pub async fn serve(path: PathBuf, status: StatusFn) -> std::io::Result<()> {
    // A socket left by a node that died is replaced; a live node's is not.
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another node serves {}", path.display()),
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let status = status.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0 && n < 64) {
                return;
            }
            let answer = match status().await {
                Some(d) if line.trim() == "json" => d.to_json() + "\n",
                Some(d) => d.to_string(),
                None => "the node is stopping\n".into(),
            };
            let _ = stream.get_mut().write_all(answer.as_bytes()).await;
        });
    }
}

/// Asks the node serving `path`; `json` selects the form.
pub async fn query(path: &Path, json: bool) -> Result<String, String> {
    let mut s = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "no running node at {} ({e}): start one with `shipworm up`, or pass --control",
            path.display()
        )
    })?;
    s.write_all(if json { b"json\n" } else { b"text\n" })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| "the node did not answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(out)
}
