//! The init that starts the agent inside the sandbox (`paddock-sandbox-init`).
//!
//! bubblewrap (or `sandbox-exec`) starts it as root with everything already mounted.
//! It then, in this order:
//! 1. binds `127.0.0.1:PORT` in the sandbox's own network namespace when asked to
//!    forward (`--forward PORT:SOCKET`): the agent's proxy variables point there;
//! 2. switches to the unprivileged user (`--uid`/`--gid`: group list, gid, uid — and
//!    checks it cannot switch back), sets `no_new_privs` and `RLIMIT_NPROC` (`--nproc`);
//! 3. without forwarding, `exec`s the agent (same pid); with forwarding, starts it as a
//!    child, relays every connection on the port to the proxy's unix socket, and exits
//!    with the agent's status. Termination signals are blocked in the init (the node
//!    signals the sandbox's whole process group; they are meant for the agent) and
//!    unblocked again in the agent before its `exec` (`os.rs`).
//!
//! The relay is not a security boundary: the socket leads only to the egress proxy,
//! which enforces the allowlist. Errors are reported on stderr and exit with 125.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::Command;

use crate::policy::RunAs;

/// The exit status of the init when it cannot start the agent.
pub const INIT_FAILED: i32 = 125;

/// The init's options (the caller appends `--`, the program and its arguments).
pub fn arguments(
    run_as: Option<RunAs>,
    forward: Option<(u16, PathBuf)>,
    nproc: Option<u64>,
) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    if let Some(run_as) = run_as {
        out.extend([
            "--uid".into(),
            run_as.uid.to_string().into(),
            "--gid".into(),
            run_as.gid.to_string().into(),
        ]);
    }
    if let Some((port, socket)) = forward {
        let mut spec = OsString::from(format!("{port}:"));
        spec.push(socket.as_os_str());
        out.extend(["--forward".into(), spec]);
    }
    if let Some(nproc) = nproc {
        out.extend(["--nproc".into(), nproc.to_string().into()]);
    }
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    run_as: Option<RunAs>,
    forward: Option<(u16, PathBuf)>,
    nproc: Option<u64>,
    program: OsString,
    args: Vec<OsString>,
}

fn parse(args: Vec<OsString>) -> Result<Options, String> {
    let mut options = Options::default();
    let mut uid = None;
    let mut gid = None;
    let mut iter = args.into_iter();
    loop {
        let Some(arg) = iter.next() else {
            return Err("missing `--` and the program to run".into());
        };
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        let value = iter
            .next()
            .map(|v| v.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--uid" => uid = Some(value.parse::<u32>().map_err(|e| format!("--uid: {e}"))?),
            "--gid" => gid = Some(value.parse::<u32>().map_err(|e| format!("--gid: {e}"))?),
            "--nproc" => {
                options.nproc = Some(value.parse().map_err(|e| format!("--nproc: {e}"))?);
            }
            "--forward" => {
                let (port, socket) = value.split_once(':').ok_or("--forward takes PORT:SOCKET")?;
                let port = port.parse().map_err(|e| format!("--forward port: {e}"))?;
                options.forward = Some((port, PathBuf::from(socket)));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    options.run_as = match (uid, gid) {
        (Some(uid), Some(gid)) => Some(RunAs { uid, gid }),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".into()),
    };
    options.program = iter.next().ok_or("no program after `--`")?;
    options.args = iter.collect();
    Ok(options)
}

/// Runs the init with `args` (without the program name) and returns the exit status.
/// The `paddock-sandbox-init` binary is this function; a node binary can also call it
/// when started as the init.
pub fn run(args: Vec<OsString>) -> i32 {
    match start(args) {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "paddock-sandbox-init: {message}");
            INIT_FAILED
        }
    }
}

fn start(args: Vec<OsString>) -> Result<i32, String> {
    let options = parse(args)?;
    let listener = match &options.forward {
        Some((port, _)) => Some(
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
                .map_err(|e| format!("binding 127.0.0.1:{port}: {e}"))?,
        ),
        None => None,
    };
    if let Some(run_as) = options.run_as {
        switch_user(run_as)?;
    }
    set_no_new_privileges()?;
    if let Some(nproc) = options.nproc {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NPROC, nproc, nproc)
            .map_err(|e| format!("RLIMIT_NPROC: {e}"))?;
    }
    let mut command = Command::new(&options.program);
    command.args(&options.args);
    let (Some(listener), Some((_, socket))) = (listener, options.forward) else {
        let error = command.exec();
        return Err(format!(
            "starting {}: {error}",
            options.program.to_string_lossy()
        ));
    };

    // Blocked here and in the relay threads, unblocked again in the agent.
    let signals = termination_signals();
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    crate::os::unblock_signals_before_exec(&mut command);
    std::thread::spawn(move || relay(listener, socket));
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", options.program.to_string_lossy()))?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the agent: {e}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(INIT_FAILED))
}

fn termination_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(signal);
    }
    set
}

fn switch_user(run_as: RunAs) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, getegid, geteuid, getgid, getuid, setgid, setuid};
    if run_as.uid == 0 || run_as.gid == 0 {
        return Err("refusing to run the agent as root".into());
    }
    crate::os::set_only_group(run_as.gid).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(run_as.gid)).map_err(|e| format!("setgid {}: {e}", run_as.gid))?;
    setuid(Uid::from_raw(run_as.uid)).map_err(|e| format!("setuid {}: {e}", run_as.uid))?;
    let switched = getuid().as_raw() == run_as.uid
        && geteuid().as_raw() == run_as.uid
        && getgid().as_raw() == run_as.gid
        && getegid().as_raw() == run_as.gid;
    if !switched || setuid(Uid::from_raw(0)).is_ok() {
        return Err("the switch to the unprivileged user did not hold".into());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_no_new_privileges() -> Result<(), String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn set_no_new_privileges() -> Result<(), String> {
    Ok(())
}

/// Relays each connection on `listener` to the unix socket, one thread per direction.
fn relay(listener: TcpListener, socket: PathBuf) {
    for incoming in listener.incoming() {
        let Ok(client) = incoming else {
            continue;
        };
        let socket = socket.clone();
        std::thread::spawn(move || {
            let Ok(upstream) = UnixStream::connect(&socket) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            pipe(client, upstream);
        });
    }
}

fn pipe(client: TcpStream, upstream: UnixStream) {
    let (Ok(client_reader), Ok(upstream_writer)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let upload = std::thread::spawn(move || {
        let mut reader = client_reader;
        let mut writer = upstream_writer;
        let _ = std::io::copy(&mut reader, &mut writer);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut reader = upstream;
    let mut writer = client;
    let _ = std::io::copy(&mut reader, &mut writer);
    let _ = writer.shutdown(Shutdown::Write);
    let _ = upload.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_round_trip_through_the_parser() {
        let mut args = arguments(
            Some(RunAs {
                uid: 1000,
                gid: 1001,
            }),
            Some((3128, PathBuf::from("/run/x/proxy.sock"))),
            Some(64),
        );
        args.extend(os(&["--", "/bin/echo", "--uid", "x"]));
        let options = parse(args).expect("parses");
        assert_eq!(
            options,
            Options {
                run_as: Some(RunAs {
                    uid: 1000,
                    gid: 1001
                }),
                forward: Some((3128, PathBuf::from("/run/x/proxy.sock"))),
                nproc: Some(64),
                program: "/bin/echo".into(),
                args: os(&["--uid", "x"]),
            }
        );
    }

    #[test]
    fn bad_invocations_are_refused() {
        assert!(parse(os(&["--uid", "5", "--", "x"])).is_err());
        assert!(parse(os(&["--bogus", "1", "--", "x"])).is_err());
        assert!(parse(os(&["--"])).is_err());
        assert!(parse(os(&["/bin/true"])).is_err());
        assert_eq!(
            run(os(&["--uid", "0", "--gid", "0", "--", "/bin/true"])),
            INIT_FAILED
        );
    }
}
