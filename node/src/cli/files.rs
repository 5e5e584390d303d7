//! Where the CLI keeps its files.

use std::path::PathBuf;

/// The default identity file: `$SHIPWORM_HOME/identity`, else `$XDG_CONFIG_HOME/shipworm/identity`,
/// else `~/.config/shipworm/identity`.
pub fn default_identity_file() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = env("SHIPWORM_HOME") {
        return Some(home.join("identity"));
    }
    let config = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")))?;
    Some(config.join("shipworm").join("identity"))
}
