//! How an `hz run` job's process talks to its caller: a stdin pipe kinski writes what the
//! caller sends into (`-i`), or a pseudo-terminal that is the program's stdin, stdout and
//! stderr (`-t`), with its size set from the caller's window.
//!
//! Writes go through a non-blocking descriptor watched by the runtime, so a program that does
//! not read its stdin holds the caller's next write (the call answers once its bytes are in
//! the pipe), never a kinski thread. Each write names its offset in the stream, so one the
//! caller sent again (a retried call) is not written twice.

use crate::exec::Exec;
use common::job::TtySize;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Why a write to a job's stdin failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error("bytes from offset {offset} were sent, but only {written} have been written: send those first")]
    Gap { offset: u64, written: u64 },
    #[error("its stdin is closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The kinski end of a job's stdin: the pipe's write end, or the terminal's master.
#[derive(Debug)]
pub(crate) struct Input {
    state: tokio::sync::Mutex<InputState>,
}

#[derive(Debug)]
struct InputState {
    /// `None` once closed.
    fd: Option<Watched>,
    /// Bytes of the stream written so far.
    written: u64,
}

/// A descriptor and the runtime's watch of it; the watch is dropped (deregistered) first.
#[derive(Debug)]
struct Watched {
    watch: AsyncFd<std::os::fd::RawFd>,
    _fd: OwnedFd,
}

impl Input {
    fn new(fd: OwnedFd) -> io::Result<Input> {
        set_nonblocking(&fd)?;
        // SAFETY: the fd stays open while the watch exists: both live in `Watched`, which
        // drops the watch first.
        let watch = unsafe { AsyncFd::register_with_interest(fd.as_raw_fd(), Interest::WRITABLE)? };
        Ok(Input {
            state: tokio::sync::Mutex::new(InputState {
                fd: Some(Watched { watch, _fd: fd }),
                written: 0,
            }),
        })
    }

    /// Writes what of `bytes` (stream offset `offset`) is not written yet, then closes the
    /// stream if `eof`. Waits while the pipe is full.
    pub(crate) async fn write(&self, offset: u64, bytes: &[u8], eof: bool) -> Result<(), InputError> {
        let mut state = self.state.lock().await;
        if offset > state.written {
            return Err(InputError::Gap {
                offset,
                written: state.written,
            });
        }
        let skip = usize::try_from(state.written - offset).unwrap_or(usize::MAX);
        let mut rest = bytes.get(skip..).unwrap_or_default();
        while !rest.is_empty() {
            let fd = state.fd.as_ref().ok_or(InputError::Closed)?;
            let mut ready = fd.watch.writable().await?;
            // SAFETY: `rest` is valid for its length; the fd is ours and open.
            let n = unsafe { libc::write(*fd.watch.get_ref(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => ready.clear_ready(),
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(err.into()),
                }
                continue;
            }
            // n is positive and at most rest.len().
            rest = &rest[n as usize..];
            state.written += n as u64;
        }
        if eof {
            state.fd = None;
        }
        Ok(())
    }
}

/// A job's terminal: its master, kept to set the size.
#[derive(Debug)]
pub(crate) struct Terminal {
    master: OwnedFd,
}

impl Terminal {
    /// Sets the terminal's size; the program's foreground group gets SIGWINCH.
    pub(crate) fn resize(&self, size: TtySize) -> io::Result<()> {
        let ws = winsize(size);
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is ours.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What kinski keeps of a job's connection while it runs.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    pub(crate) input: Option<std::sync::Arc<Input>>,
    pub(crate) terminal: Option<std::sync::Arc<Terminal>>,
}

/// Gives `fd`'s file to `owner` (uid, gid), when there is one: a program run as a user opens
/// its own pipes and terminal again by name (`/dev/stdin`, `$(tty)`).
pub(crate) fn give(fd: &OwnedFd, owner: Option<(libc::uid_t, libc::gid_t)>) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    Ok(())
}

/// Gives `command` a stdin pipe (its end `owner`'s); returns kinski's end.
pub(crate) fn stdin_pipe(command: &mut Exec, owner: Option<(libc::uid_t, libc::gid_t)>) -> io::Result<Input> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    give(&read, owner)?;
    // The program's end stays blocking, as a stdin is.
    command.stdin(Some(read));
    Input::new(write)
}

/// Opens a pseudo-terminal of `size` and makes it `command`'s stdin, stdout and stderr and
/// controlling terminal, in a session of its own (so its process group is its pid, as an
/// attempt's is). Returns the master for reading the output, the input, and the terminal.
pub(crate) fn terminal(
    command: &mut Exec,
    size: TtySize,
    owner: Option<(libc::uid_t, libc::gid_t)>,
) -> io::Result<(OwnedFd, Input, Terminal)> {
    let pty = nix::pty::openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
    // Its user's, as a login's terminal is.
    give(&pty.slave, owner)?;
    for fd in [&pty.master, &pty.slave] {
        // SAFETY: fcntl on our own descriptor.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // In a session of its own, the terminal its controlling one.
    command.terminal(pty.slave)?;
    let read = pty.master.try_clone()?;
    set_nonblocking(&read)?;
    let input = Input::new(pty.master.try_clone()?)?;
    Ok((read, input, Terminal { master: pty.master }))
}

fn winsize(size: TtySize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on our own descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
