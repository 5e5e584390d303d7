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
    let listener = bind(&path).await?;
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

/// Binds the control socket at `path`, readable and writable by its owner only from the start.
///
/// A socket left by a node that died is replaced; a live node's is not, and neither is anything
/// that is not a socket (a mistyped `--control` must not delete a file). The socket is bound in a
/// fresh directory of mode 0700 beside `path`, made 0600, and only then renamed into place, so it
/// is never reachable by others, even for a moment.
async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: choose another --control path",
                    path.display()
                ),
            ))
        }
        Ok(_) if UnixStream::connect(path).await.is_ok() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another node serves {}", path.display()),
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let private = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("sock");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Removed when the test ends.
    fn dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("shipworm-control-{name}-"))
            .tempdir()
            .unwrap()
    }

    #[tokio::test]
    async fn the_socket_is_private_and_replaces_only_a_dead_socket() {
        let d = dir("sock");
        let path = d.path().join("shipworm.sock");
        let first = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no staging directory is left behind"
        );
        // A live node's socket is not taken over.
        let err = bind(&path).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        // A dead node's socket is.
        drop(first);
        bind(&path).await.unwrap();
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone_and_named() {
        let d = dir("file");
        let path = d.path().join("notes.txt");
        std::fs::write(&path, b"keep me").unwrap();
        let err = bind(&path).await.unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
