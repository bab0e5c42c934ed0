//! Handing arena files to another process over a Unix socket
//! (`SCM_RIGHTS`): how an NF gets the parts of the arena it may map.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors one message may carry (a grant is 2 plus one per
/// worker).
pub const MAX_FILES: usize = 64;

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Sends `bytes` on `sock` with `files` attached to its first byte; returns
/// how many bytes went (at least one, or an error such as `WouldBlock`).
/// The descriptors travel with that first byte: send the rest without them.
pub fn send_with_files(sock: &UnixStream, bytes: &[u8], files: &[File]) -> io::Result<usize> {
    if files.len() > MAX_FILES || bytes.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "at most 64 descriptors, with at least one byte"));
    }
    let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(bytes)], cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(errno),
        }
    }
}

/// Reads into `buf` from `sock`, keeping any descriptors that came with
/// the bytes (close-on-exec) in `files`; returns the byte count (0 at EOF).
pub fn recv_with_files(sock: &UnixStream, buf: &mut [u8], files: &mut Vec<File>) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FILES]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.map_err(errno)?,
        };
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(errno)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in our table
                    // for us (SCM_RIGHTS); nothing else owns it.
                    files.push(unsafe { File::from_raw_fd(fd) });
                }
            }
        }
        return Ok(n);
    }
}

/// Reads one line (up to and without its `\n`, at most `max` bytes) and the
/// descriptors sent with it. Blocking; for a handshake.
pub fn read_line_with_files(sock: &UnixStream, max: usize) -> io::Result<(Vec<u8>, Vec<File>)> {
    let mut line = Vec::new();
    let mut files = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        // Peek-free: a handshake's answer is the last thing the peer sends
        // before it waits for us, so reading past the newline takes nothing
        // that belongs to a later message.
        let n = recv_with_files(sock, &mut byte, &mut files)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the end of the line"));
        }
        let got = &byte[..n];
        if let Some(i) = got.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&got[..i]);
            return Ok((line, files));
        }
        line.extend_from_slice(got);
        if line.len() > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("line longer than {max} bytes")));
        }
    }
}
