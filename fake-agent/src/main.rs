//! `paddock-fake-agent`: a tiny stand-in for the Claude Code CLI that speaks its
//! stream-json protocol with no model behind it, for fast fault and speed tests of
//! whatever drives the CLI (the node agent's ClaudeSession above all).
//!
//! It takes the real CLI's flags (ignoring those it does not need, and unknown ones),
//! reads `{"type":"user",...}` lines on stdin and answers each turn at once; `fake:`
//! words in a prompt make it misbehave on purpose (see `directives.rs`). `args.rs`
//! reads the command line, `session.rs` writes the lines. Std only, plus serde_json
//! and uuid, so it starts in milliseconds.

mod args;
mod directives;
mod session;

use std::io;

fn main() {
    let args = args::Args::parse(std::env::args().skip(1));
    let code = session::run(
        &args,
        io::stdin().lock(),
        io::stdout().lock(),
        io::stderr().lock(),
    );
    std::process::exit(code);
}
