//! The `paddock` command's library half: the gateway client and the terminal
//! rendering of events, shared by the binary and the cross-component tests.

pub mod client;
pub mod render;
