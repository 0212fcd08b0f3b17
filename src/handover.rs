//! Binary upgrades that lose no request. The running gateway starts the new binary with one
//! end of a socket pair as its standard input. Over it the new process receives the
//! listening sockets (SCM_RIGHTS, as HAProxy's `-x`), the bans and the rest of the
//! defence's state (an opaque block the application fills: counters, levels...), starts
//! serving from the same sockets, and says it is ready; only then does the old process stop accepting and
//! drain. Both accept from the same sockets meanwhile, so no connection is refused. A new
//! binary that fails to start, or is not ready in time, is stopped and the old one goes on.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Set (to `stdin`) in the new process's environment: its standard input is the channel.
pub const ENV: &str = "REMPART_HANDOVER";

/// How long a new binary has to serve (within `rempart upgrade`'s wait for an answer).
pub const READY_WITHIN: Duration = Duration::from_secs(25);

/// Most listening sockets handed over at once.
const MAX_SOCKETS: usize = 64;

/// What the old process hands over besides the sockets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Handed {
    /// The address of each socket, in the order of the descriptors.
    pub addresses: Vec<SocketAddr>,
    /// Bans in force: (target, reason, ms left, `None` for never).
    pub bans: Vec<(String, String, Option<u64>)>,
    /// The secret of the pass key made at start when the configuration names none (hex):
    /// the passes residents hold stay valid.
    pub random_pass_key: Option<String>,
    /// Tenants an operator put under attack: (tenant, ms left, `None` until switched off).
    #[serde(default)]
    pub under_attack: Vec<(String, Option<u64>)>,
}

/// The old side: starts `binary` with `args`, hands it `sockets`, `handed` and `state`,
/// and waits up to `deadline` for it to be ready. `Ok` carries its process id; `Err` says
/// why it was stopped (and the caller keeps serving).
pub fn offer(
    binary: &Path,
    args: &[std::ffi::OsString],
    sockets: &[BorrowedFd<'_>],
    handed: &Handed,
    state: &[u8],
    deadline: Duration,
) -> Result<u32, String> {
    let (mut ours, theirs) =
        UnixStream::pair().map_err(|e| format!("cannot make the channel: {e}"))?;
    let mut child = std::process::Command::new(binary)
        .args(args)
        .env(ENV, "stdin")
        .stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id();
    let outcome = talk(&mut ours, &mut child, sockets, handed, state, deadline);
    if outcome.is_err() {
        // Never two half-started gateways: the new one goes, the old one serves.
        let _ = child.kill();
        let _ = child.wait();
    }
    // Otherwise the new process outlives this one (it is not waited for).
    outcome.map(|()| pid)
}

fn talk(
    channel: &mut UnixStream,
    child: &mut std::process::Child,
    sockets: &[BorrowedFd<'_>],
    handed: &Handed,
    state: &[u8],
    deadline: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let exited = |child: &mut std::process::Child| match child.try_wait() {
        Ok(Some(status)) => Some(format!(
            "the new binary exited ({status}) before it was ready; see its log lines above"
        )),
        _ => None,
    };
    let body = serde_json::to_vec(handed).map_err(|e| e.to_string())?;
    let too_much = |_| "too much state to hand over".to_owned();
    let len = u32::try_from(body.len()).map_err(too_much)?;
    let state_len = u32::try_from(state.len()).map_err(too_much)?;
    // The lengths and the descriptors in one message, then the two blocks.
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if sockets.len() > MAX_SOCKETS
        || !control.push(rustix::net::SendAncillaryMessage::ScmRights(sockets))
    {
        return Err("too many listening sockets to hand over".into());
    }
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&state_len.to_le_bytes());
    rustix::net::sendmsg(
        channel.as_fd(),
        &[io::IoSlice::new(&head)],
        &mut control,
        rustix::net::SendFlags::empty(),
    )
    .map_err(|e| ended(child, &format!("did not take the sockets ({e})")))?;
    channel
        .write_all(&body)
        .and_then(|()| channel.write_all(state))
        .map_err(|e| ended(child, &format!("did not take the state ({e})")))?;
    // Then wait for "ready": a line, checking now and then that the new process lives.
    channel
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut said = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        if let Some(why) = exited(child) {
            return Err(why);
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "the new binary was not ready within {} s",
                deadline.as_secs()
            ));
        }
        match channel.read(&mut buf) {
            Ok(0) => return Err(ended(child, "closed the channel before it was ready")),
            Ok(n) => {
                said.extend_from_slice(&buf[..n]);
                if said.contains(&b'\n') {
                    return if said.starts_with(b"ready") {
                        Ok(())
                    } else {
                        Err(format!(
                            "the new binary said: {}",
                            String::from_utf8_lossy(&said).trim()
                        ))
                    };
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(ended(child, &format!("broke the channel ({e})"))),
        }
    }
}

/// Why the new binary let the channel go: its exit status when it ends within a moment
/// (it usually is ending), or `what` it did.
fn ended(child: &mut std::process::Child, what: &str) -> String {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return format!(
                "the new binary exited ({status}) before it was ready; see its log lines above"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    format!("the new binary {what}")
}

/// The new side: what the old process handed over, when this process was started by an
/// upgrade (`ENV` set). The channel stays open to say `ready` (see `Taken::ready`).
pub fn take() -> io::Result<Option<Taken>> {
    if std::env::var_os(ENV).is_none() {
        return Ok(None);
    }
    let mut channel = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut head = [0u8; 8];
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        channel.as_fd(),
        &mut [io::IoSliceMut::new(&mut head)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes != head.len() {
        return Err(io::Error::other("the handover channel ended early"));
    }
    let mut fds = Vec::new();
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let [a, b, c, d, e, f, g, h] = head;
    let mut body = vec![0u8; u32::from_le_bytes([a, b, c, d]) as usize];
    channel.read_exact(&mut body)?;
    let mut state = vec![0u8; u32::from_le_bytes([e, f, g, h]) as usize];
    channel.read_exact(&mut state)?;
    let handed: Handed = serde_json::from_slice(&body).map_err(io::Error::other)?;
    if handed.addresses.len() != fds.len() {
        return Err(io::Error::other(format!(
            "{} sockets announced, {} received",
            handed.addresses.len(),
            fds.len()
        )));
    }
    let listeners = fds.into_iter().map(std::net::TcpListener::from).collect();
    Ok(Some(Taken {
        channel,
        listeners,
        handed,
        state,
    }))
}

/// What an upgraded process took over.
pub struct Taken {
    channel: UnixStream,
    /// The listening sockets.
    pub listeners: Vec<std::net::TcpListener>,
    /// The rest.
    pub handed: Handed,
    /// The application's block (see `offer`).
    pub state: Vec<u8>,
}

impl Taken {
    /// This process serves: the old one may stop accepting. Standard input becomes
    /// `/dev/null` again.
    pub fn ready(mut self) -> io::Result<()> {
        self.channel
            .write_all(format!("ready {}\n", std::process::id()).as_bytes())?;
        let null = std::fs::File::open("/dev/null")?;
        rustix::stdio::dup2_stdin(&null)?;
        Ok(())
    }
}

/// An upgrade asked for (admin API): the binary to start (`None`: the one this process was
/// started from), and where to say how it went (the new process id, or why not).
pub struct UpgradeRequest {
    /// The new binary.
    pub binary: Option<std::path::PathBuf>,
    /// The outcome.
    pub reply: tokio::sync::oneshot::Sender<Result<u32, String>>,
}

/// A 32-byte secret as hex (the handover's JSON).
pub fn secret_to_hex(secret: &[u8; 32]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret of `secret_to_hex`; `None` when malformed.
pub fn secret_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_cross_as_hex() {
        let secret: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(secret_from_hex(&secret_to_hex(&secret)), Some(secret));
        assert_eq!(secret_from_hex("zz"), None);
        assert_eq!(secret_from_hex(&"g".repeat(64)), None);
    }
}
