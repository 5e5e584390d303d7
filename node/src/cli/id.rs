//! `shipworm id`: this node's id, overlay address and ticket.

use shipworm::Ticket;

use crate::common::Common;

/// Prints the identity (created on first use).
pub fn run(common: &Common) -> anyhow::Result<()> {
    let node = common.identity()?.node_id();
    let ticket = if common.rendezvous.is_empty() {
        None
    } else {
        Some(Ticket::new(node, common.rendezvous.clone(), vec![])?)
    };
    if common.json {
        let out = serde_json::json!({
            "node_id": node.to_string(),
            "overlay_addr": node.overlay_addr().to_string(),
            "ticket": ticket.map(|t| t.to_string()),
        });
        println!("{out}");
    } else {
        println!("node id       {node}");
        println!("overlay addr  {}", node.overlay_addr());
        match ticket {
            Some(t) => println!("ticket        {t}"),
            None => println!("ticket        (give --rendezvous HOST:PORT to make one)"),
        }
    }
    Ok(())
}
