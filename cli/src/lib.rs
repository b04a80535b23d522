//! The `paddock` command's library half: the gateway client, the terminal rendering
//! of events and the development certificate of `paddock up`, shared by the binary
//! and the cross-component tests.

pub mod client;
pub mod dev_cert;
pub mod private_file;
pub mod render;
