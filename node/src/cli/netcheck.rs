//! `shipworm netcheck`: what the network does to this host, in the spirit of
//! `tailscale netcheck`: public address, NAT mapping behaviour, port mapping, IPv6.

use std::time::{Duration, Instant};

use shipworm::engine::paths::CandidateKind;

use crate::common::Common;

/// Checks and prints.
pub async fn run(common: Common) -> anyhow::Result<()> {
    // The port mapping is tried once below, not kept.
    let node = common.builder(0)?.portmap(false).spawn().await?;
    let registered = node.registered(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut status = node.status().await?;
    while status.maps_per_destination.is_none() && registered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = node.status().await?;
    }
    let portmap = if common.no_portmap {
        Err("not checked (--no-portmap)".to_string())
    } else {
        match shipworm::io::portmap::map(
            node.local_addr().port(),
            Duration::from_secs(common.portmap_lease),
        )
        .await
        {
            Ok(m) => {
                let found = format!("{} via {}", m.external, m.protocol);
                let _ = m.remove().await;
                Ok(found)
            }
            Err(e) => Err(e.to_string()),
        }
    };
    let addrs = |f: &dyn Fn(&shipworm::engine::Candidate) -> bool| -> Vec<String> {
        status
            .candidates
            .iter()
            .filter(|c| f(c))
            .map(|c| c.addr.to_string())
            .collect()
    };
    let host6 = addrs(&|c| c.kind == CandidateKind::Host && c.addr.is_ipv6());
    let reflexive = addrs(&|c| c.kind == CandidateKind::Reflexive);
    if common.json {
        let out = serde_json::json!({
            "registered": registered,
            "maps_per_destination": status.maps_per_destination,
            "ports_sequential": status.ports_sequential,
            "reflexive": reflexive,
            "ipv6_host": host6,
            "port_mapping": portmap.as_ref().ok(),
            "port_mapping_error": portmap.as_ref().err(),
        });
        println!("{out}");
    } else {
        let rendezvous = match registered {
            true => "reachable",
            false => "no answer (give --rendezvous HOST:PORT)",
        };
        println!("rendezvous:     {rendezvous}");
        for a in &reflexive {
            println!("public address: {a}");
        }
        let mapping = match status.maps_per_destination {
            Some(true) if status.ports_sequential => {
                "per destination, ports allocated one after the other (a hard NAT whose next \
                 ports peers predict: direct paths need a port mapping or birthday probing)"
            }
            Some(true) => {
                "per destination (a hard NAT: direct paths need a port mapping or birthday probing)"
            }
            Some(false) => "independent of destination (hole punching works)",
            None => "unknown (no rendezvous with a second STUN port answered)",
        };
        println!("NAT mapping:    {mapping}");
        match &portmap {
            Ok(m) => println!("port mapping:   available ({m})"),
            Err(e) => println!("port mapping:   none ({e})"),
        }
        if host6.is_empty() {
            println!("IPv6:           no global IPv6 address");
        }
        for a in &host6 {
            println!("IPv6:           {a}");
        }
    }
    node.close().await;
    Ok(())
}
