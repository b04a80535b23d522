//! `paddock-sandbox-init`: started by bubblewrap or `sandbox-exec` as the first
//! program of a sandbox; switches to the unprivileged user, relays the egress proxy
//! into the sandbox's network namespace and runs the agent. See `init.rs`.

fn main() {
    let code = paddock_sandbox::init::run(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
