//! `shipworm status`: asks a running `up` on its control socket.

use crate::common::Common;

/// Prints the running node's table.
pub async fn run(common: Common) -> anyhow::Result<()> {
    let out = crate::control::query(&common.control_path(), common.json)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(())
}
