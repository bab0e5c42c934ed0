//! The control socket: a Unix stream socket serving `controller::api`
//! requests (one JSON line in, one out) from the main lcore.
//!
//! Non-blocking accept polled by the main loop; each connection gets a short
//! read timeout so a stuck client cannot stall the runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use controller::api::{Request, Response};

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> Result<ControlSocket, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        if path.exists() {
            // A live runtime answers; a stale socket from a crash does not.
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "control socket {} is in use: another ubox-runtime runs with this runtime.name; stop it or pick another name",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(ControlSocket { listener, path: path.to_path_buf() })
    }

    /// Serve every pending connection with `answer`, which also gets the
    /// connection (an NF's registration keeps a clone of it open).
    pub fn poll(&self, answer: &mut impl FnMut(Request, &UnixStream) -> Response) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = serve(stream, answer) {
                tracing::debug!("control connection: {e}");
            }
        }
    }
}

fn serve(stream: UnixStream, answer: &mut impl FnMut(Request, &UnixStream) -> Response) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut line = String::new();
    BufReader::new(&stream).take(64 * 1024).read_line(&mut line)?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(req, &stream),
        Err(e) => Response::Error { message: format!("bad request: {e}") },
    };
    let mut out = serde_json::to_string(&resp).map_err(std::io::Error::other)?;
    out.push('\n');
    (&stream).write_all(out.as_bytes())
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
