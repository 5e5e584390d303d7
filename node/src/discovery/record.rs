//! The record a node publishes under its NodeId, and what a resolver accepts of one
//! (`docs/discovery.md` §"The record").
//!
//! The record is a pkarr signed packet: a DNS packet signed with the node's ed25519 key, stored as
//! a BEP 44 mutable item whose key is the NodeId itself and whose sequence number is the packet's
//! timestamp in microseconds. It holds one TXT record per home rendezvous server:
//!
//! ```text
//! _shipworm.<z-base-32 NodeId>.  TXT  "rdv=HOST:PORT"      (1 to MAX_RENDEZVOUS of them)
//! ```
//!
//! Never the node's IP candidates: they reveal where the node is and go stale within minutes,
//! and a peer learns them in the handshake anyway.
//!
//! Everything resolved is a claim: the signature must verify under the NodeId asked for, the
//! record must be newer than any seen before for that NodeId, and its size and counts are bounded.
//! Even then it only names rendezvous servers: the peer's key is proven by the handshake.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pkarr::dns::rdata::{RData, TXT};
use pkarr::{Keypair, PublicKey, SignedPacket, Timestamp};
use shipworm_tunnel::ticket::MAX_RENDEZVOUS;
use shipworm_tunnel::{Identity, NodeId, RendezvousAddr};

/// The DNS name (below the key) holding shipworm's TXT records.
pub const RECORD_NAME: &str = "_shipworm";
/// The key of a rendezvous entry in a TXT string (`rdv=HOST:PORT`).
const RDV_KEY: &str = "rdv";
/// How long a resolver may keep a record (the TXT records' TTL): a peer that moves to another
/// rendezvous is found there at the latest this much later.
pub const RECORD_TTL: Duration = Duration::from_secs(300);
/// How many resolved records a node keeps at most.
pub const MAX_CACHED: usize = 1024;

/// What a node publishes: where it can be introduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its home rendezvous servers, in the order it prefers them (1 to [`MAX_RENDEZVOUS`]).
    pub rendezvous: Vec<RendezvousAddr>,
}

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The signature does not verify under the NodeId we asked for.
    #[error("the record's signature does not verify under {0}: {1}")]
    BadSignature(NodeId, String),
    /// A valid record, but for another key.
    #[error("the record is signed by {found}, not by {expected}")]
    WrongKey {
        /// Whom we asked for.
        expected: NodeId,
        /// Whose record it is.
        found: String,
    },
    /// Not a record of ours (no rendezvous entry).
    #[error("the record of {0} names no rendezvous server")]
    Empty(NodeId),
    /// More rendezvous entries than a node ever publishes.
    #[error("the record of {0} names more than {MAX_RENDEZVOUS} rendezvous servers")]
    TooMany(NodeId),
    /// An entry that is not `HOST:PORT`.
    #[error("the record of {node} has a bad rendezvous entry: {why}")]
    BadEntry {
        /// Whose record.
        node: NodeId,
        /// What is wrong.
        why: String,
    },
    /// Older than (or as old as) one already seen for that NodeId: a replay or a stale copy.
    #[error("the record of {0} is older than one already seen")]
    Older(NodeId),
    /// The record does not fit the DHT (a BEP 44 value holds at most 1000 bytes).
    #[error("the record does not fit a DHT item: {0}")]
    TooLarge(String),
}

/// The pkarr key pair of an identity: the same ed25519 key, so the NodeId is the record's key.
pub fn keypair(identity: &Identity) -> Keypair {
    Keypair::from_secret_key(&identity.secret_seed())
}

/// The pkarr public key of a NodeId.
pub fn public_key(node: NodeId) -> PublicKey {
    // A NodeId is a valid ed25519 point (checked when it was parsed), so this cannot fail; the
    // error branch keeps untrusted input from ever panicking here all the same.
    PublicKey::try_from(node.as_bytes()).unwrap_or_else(|_| Keypair::random().public_key())
}

/// Signs `record` with `identity` at `timestamp` (microseconds since the Unix epoch; the BEP 44
/// sequence number, so it must grow from one publication to the next).
pub fn sign(
    identity: &Identity,
    record: &Record,
    timestamp: u64,
) -> Result<SignedPacket, RecordError> {
    if record.rendezvous.is_empty() || record.rendezvous.len() > MAX_RENDEZVOUS {
        return Err(RecordError::TooLarge(format!(
            "a record names 1 to {MAX_RENDEZVOUS} rendezvous servers, not {}",
            record.rendezvous.len()
        )));
    }
    let entries: Vec<String> = record
        .rendezvous
        .iter()
        .map(|r| format!("{RDV_KEY}={r}"))
        .collect();
    let ttl = RECORD_TTL.as_secs() as u32;
    let mut builder = SignedPacket::builder().timestamp(Timestamp::from(timestamp));
    for e in &entries {
        let txt = TXT::new()
            .with_string(e)
            .map_err(|e| RecordError::TooLarge(e.to_string()))?;
        let name = RECORD_NAME
            .try_into()
            .map_err(|e: pkarr::dns::SimpleDnsError| RecordError::TooLarge(e.to_string()))?;
        builder = builder.txt(name, txt, ttl);
    }
    builder
        .sign(&keypair(identity))
        .map_err(|e| RecordError::TooLarge(e.to_string()))
}

/// Verifies what the network handed us for `node` (a BEP 44 value with its signature and
/// sequence number, in pkarr's relay form: 64-byte signature, 8-byte timestamp, DNS packet)
/// under `node`'s key, and reads it.
pub fn verify(node: NodeId, payload: &[u8]) -> Result<(SignedPacket, Record), RecordError> {
    if payload.len() as u64 > SignedPacket::MAX_BYTES {
        return Err(RecordError::TooLarge(format!("{} bytes", payload.len())));
    }
    let packet = SignedPacket::from_relay_payload(&public_key(node), &payload.to_vec().into())
        .map_err(|e| RecordError::BadSignature(node, e.to_string()))?;
    let record = read(node, &packet)?;
    Ok((packet, record))
}

/// Reads a signed packet (already verified by pkarr) as `node`'s record: it must be `node`'s.
pub fn read(node: NodeId, packet: &SignedPacket) -> Result<Record, RecordError> {
    if packet.public_key().as_bytes() != node.as_bytes() {
        return Err(RecordError::WrongKey {
            expected: node,
            found: packet.public_key().to_z32(),
        });
    }
    let mut rendezvous = Vec::new();
    for rr in packet.resource_records(RECORD_NAME) {
        let RData::TXT(txt) = &rr.rdata else { continue };
        // Each string is `key=value` (RFC 1464); only our own key counts, anything else (other
        // applications' strings) is skipped.
        for (key, value) in txt.iter_raw() {
            if key != RDV_KEY.as_bytes() {
                continue;
            }
            let value = value.unwrap_or_default();
            if rendezvous.len() == MAX_RENDEZVOUS {
                return Err(RecordError::TooMany(node));
            }
            let text = std::str::from_utf8(value).map_err(|_| RecordError::BadEntry {
                node,
                why: "not UTF-8".into(),
            })?;
            let r: RendezvousAddr = text.parse().map_err(|e| RecordError::BadEntry {
                node,
                why: format!("{e}"),
            })?;
            if !rendezvous.contains(&r) {
                rendezvous.push(r);
            }
        }
    }
    if rendezvous.is_empty() {
        return Err(RecordError::Empty(node));
    }
    Ok(Record { rendezvous })
}

/// Records resolved so far, each kept for its TTL; remembers the newest timestamp seen per
/// NodeId so an older copy is never accepted after a newer one. At most [`MAX_CACHED`] NodeIds.
#[derive(Debug, Default)]
pub struct RecordCache {
    entries: HashMap<NodeId, Cached>,
}

#[derive(Debug, Clone)]
struct Cached {
    timestamp: u64,
    record: Record,
    expires: Instant,
}

impl RecordCache {
    /// A fresh record for `node`, if one is cached and unexpired at `now`.
    pub fn get(&self, now: Instant, node: NodeId) -> Option<&Record> {
        self.entries
            .get(&node)
            .filter(|c| now < c.expires)
            .map(|c| &c.record)
    }

    /// The newest timestamp seen for `node` (expired or not): resolvers ask the DHT for newer.
    pub fn newest(&self, node: NodeId) -> Option<u64> {
        self.entries.get(&node).map(|c| c.timestamp)
    }

    /// Offers a verified record with its timestamp; refused if not newer than the newest seen.
    /// A record just as new as the cached one (the same publication, from another DHT node)
    /// refreshes its lifetime.
    pub fn offer(
        &mut self,
        now: Instant,
        node: NodeId,
        timestamp: u64,
        record: Record,
    ) -> Result<(), RecordError> {
        let expires = now + RECORD_TTL;
        if let Some(c) = self.entries.get_mut(&node) {
            if timestamp < c.timestamp || (timestamp == c.timestamp && record != c.record) {
                return Err(RecordError::Older(node));
            }
            *c = Cached {
                timestamp,
                record,
                expires,
            };
            return Ok(());
        }
        if self.entries.len() >= MAX_CACHED {
            // Room for the new one: the entry that expires first goes.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(n, _)| *n)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            node,
            Cached {
                timestamp,
                record,
                expires,
            },
        );
        Ok(())
    }

    /// Forgets `node`'s record (it led nowhere) but keeps its timestamp as the floor.
    pub fn expire(&mut self, now: Instant, node: NodeId) {
        if let Some(c) = self.entries.get_mut(&node) {
            c.expires = now;
        }
    }

    /// How many NodeIds are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(servers: &[&str]) -> Record {
        Record {
            rendezvous: servers.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    const T: u64 = 1_800_000_000_000_000;

    #[test]
    fn a_signed_record_verifies_and_reads_back() {
        let id = Identity::from_seed(&[7; 32]);
        let r = rec(&[
            "192.0.2.1:3478",
            "rdv.example.net:3478",
            "[2001:db8::1]:3478",
        ]);
        let packet = sign(&id, &r, T).unwrap();
        assert_eq!(packet.public_key().as_bytes(), id.node_id().as_bytes());
        let (p, back) = verify(id.node_id(), &packet.to_relay_payload()).unwrap();
        assert_eq!(back, r);
        assert_eq!(p.timestamp().as_u64(), T);
    }

    #[test]
    fn a_record_signed_by_another_key_is_rejected() {
        let (a, b) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let by_b = sign(&b, &rec(&["192.0.2.1:3478"]), T).unwrap();
        // B's value handed out as A's: the signature does not verify under A's key.
        let e = verify(a.node_id(), &by_b.to_relay_payload()).unwrap_err();
        assert!(
            matches!(e, RecordError::BadSignature(n, _) if n == a.node_id()),
            "{e}"
        );
        // B's whole packet read as A's record: the key does not match.
        let e = read(a.node_id(), &by_b).unwrap_err();
        assert!(matches!(e, RecordError::WrongKey { .. }), "{e}");
        // One flipped bit of A's own value.
        let good = sign(&a, &rec(&["192.0.2.1:3478"]), T).unwrap();
        let mut payload = good.to_relay_payload().to_vec();
        let last = payload.len() - 1;
        payload[last] ^= 1;
        assert!(matches!(
            verify(a.node_id(), &payload),
            Err(RecordError::BadSignature(..))
        ));
    }

    #[test]
    fn untrusted_values_never_panic_and_are_bounded() {
        let a = Identity::from_seed(&[3; 32]).node_id();
        for len in [0, 1, 71, 72, 104, 2000] {
            assert!(verify(a, &vec![0u8; len]).is_err());
        }
        // Too many entries, signed by the right key: refused, not truncated.
        let id = Identity::from_seed(&[3; 32]);
        let mut b = SignedPacket::builder().timestamp(Timestamp::from(T));
        for k in 0..=MAX_RENDEZVOUS {
            let s = format!("rdv=192.0.2.{k}:3478");
            let txt = TXT::new().with_string(&s).unwrap().into_owned();
            b = b.txt(RECORD_NAME.try_into().unwrap(), txt, 300);
        }
        let p = b.sign(&keypair(&id)).unwrap();
        assert_eq!(read(a, &p), Err(RecordError::TooMany(a)));
        // No entry of ours.
        let p = SignedPacket::builder()
            .txt(
                RECORD_NAME.try_into().unwrap(),
                TXT::new().with_string("other=1").unwrap(),
                300,
            )
            .sign(&keypair(&id))
            .unwrap();
        assert_eq!(read(a, &p), Err(RecordError::Empty(a)));
        // A bad entry.
        let p = SignedPacket::builder()
            .txt(
                RECORD_NAME.try_into().unwrap(),
                TXT::new().with_string("rdv=no-port").unwrap(),
                300,
            )
            .sign(&keypair(&id))
            .unwrap();
        assert!(matches!(read(a, &p), Err(RecordError::BadEntry { .. })));
        assert!(sign(&id, &rec(&[]), T).is_err());
    }

    #[test]
    fn an_older_record_is_ignored_and_the_cache_is_bounded() {
        let a = Identity::from_seed(&[4; 32]).node_id();
        let now = Instant::now();
        let mut c = RecordCache::default();
        c.offer(now, a, T, rec(&["192.0.2.1:3478"])).unwrap();
        assert_eq!(
            c.offer(now, a, T - 1, rec(&["192.0.2.66:3478"])),
            Err(RecordError::Older(a))
        );
        // The same publication again, from another DHT node: fine.
        c.offer(now, a, T, rec(&["192.0.2.1:3478"])).unwrap();
        // Something else at the same sequence number: not a newer record.
        assert!(c.offer(now, a, T, rec(&["192.0.2.66:3478"])).is_err());
        assert_eq!(c.get(now, a), Some(&rec(&["192.0.2.1:3478"])));
        // Expired: gone from lookups, but its timestamp still refuses older copies.
        let later = now + RECORD_TTL;
        assert_eq!(c.get(later, a), None);
        assert!(c.offer(later, a, T - 5, rec(&["192.0.2.66:3478"])).is_err());
        c.offer(later, a, T + 1, rec(&["192.0.2.2:3478"])).unwrap();
        assert_eq!(c.get(later, a), Some(&rec(&["192.0.2.2:3478"])));
        c.expire(later, a);
        assert_eq!(c.get(later, a), None);
        assert_eq!(c.newest(a), Some(T + 1));
        for k in 0..(MAX_CACHED as u32 + 10) {
            let mut seed = [9u8; 32];
            seed[..4].copy_from_slice(&k.to_be_bytes());
            let n = Identity::from_seed(&seed).node_id();
            c.offer(now, n, T, rec(&["192.0.2.1:3478"])).unwrap();
        }
        assert_eq!(c.len(), MAX_CACHED);
    }
}
