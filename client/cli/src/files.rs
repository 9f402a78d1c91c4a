//! Files the CLI creates at a path the user gave: see
//! [`keyward_client::files`] (shared with the agent, which writes backups).

pub use keyward_client::files::*;
