//! The control socket: a Unix stream socket serving `controller::api`
//! requests (one JSON line in, one out) from the main lcore.
//!
//! A thread blocks in `accept` and hands each connection to the main loop,
//! which serves it on its next pass; each connection gets a short read
//! timeout so a stuck client cannot stall the runtime. (It used to be a
//! non-blocking `accept` every pass of the main loop, 50 times a second.
//! Linux allocates a socket before it knows there is no connection and
//! frees it through RCU, so every empty `accept` started RCU grace-period
//! work; the RCU kthread then kept preempting the worker on its CPU, about
//! 100 extra involuntary context switches a second measured by
//! `ubox-bench e2e`. A blocked `accept` allocates for real connections
//! only.)

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use controller::api::{Request, Response};

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Connections the acceptor thread took, started by the first `poll`
    /// (on the main lcore, so the thread inherits its CPU).
    accepted: OnceLock<Mutex<Receiver<UnixStream>>>,
    stop: Arc<AtomicBool>,
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
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            accepted: OnceLock::new(),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The acceptor thread's channel, starting the thread on first use.
    fn accepted(&self) -> Option<&Mutex<Receiver<UnixStream>>> {
        if let Some(rx) = self.accepted.get() {
            return Some(rx);
        }
        let listener = match self.listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("control socket: cannot clone the listener: {e}");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel();
        let stop = Arc::clone(&self.stop);
        let spawned = std::thread::Builder::new().name("ubox-control".into()).spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                match conn {
                    Ok(c) => {
                        if tx.send(c).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // Out of descriptors and the like: do not spin.
                        tracing::debug!("control socket accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("control socket: cannot start the acceptor thread: {e}");
            return None;
        }
        Some(self.accepted.get_or_init(|| Mutex::new(rx)))
    }

    /// Serve every pending connection with `answer`, which also gets the
    /// connection (an NF's registration keeps a clone of it open).
    pub fn poll(&self, answer: &mut impl FnMut(Request, &UnixStream) -> Response) {
        let Some(rx) = self.accepted() else { return };
        let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(stream) = rx.try_recv() {
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
        if self.accepted.get().is_some() {
            // Wake the acceptor so it sees `stop` and ends.
            self.stop.store(true, Ordering::Release);
            let _ = UnixStream::connect(&self.path);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_connections_taken_by_the_acceptor_thread() {
        let dir = std::env::temp_dir().join(format!("ubox-control-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let sock = ControlSocket::bind(&path).unwrap();
        assert!(matches!(ControlSocket::bind(&path), Err(e) if e.contains("in use")));
        let mut answer = |req: Request, _: &UnixStream| match req {
            Request::Ping => Response::Pong { instance: "t".into(), pid: 7 },
            _ => Response::Error { message: "no".into() },
        };
        sock.poll(&mut answer); // starts the acceptor
        let client = std::thread::spawn({
            let path = path.clone();
            move || controller::api::call(&path, &Request::Ping, Duration::from_secs(5))
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !client.is_finished() && std::time::Instant::now() < deadline {
            sock.poll(&mut answer);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(client.join().unwrap(), Ok(Response::Pong { pid: 7, .. })));
        drop(sock);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
