//! Wire formats: one module per format, each with its own `parse` and `emit`, its offsets and
//! its byte layout in its docs (`docs/protocol.md` names every layout).
//!
//! - [`addr`]: the one encoding of a socket address, shared by every format;
//! - [`packet`]: the outer tunnel packet (handshake messages, cookie reply, transport header);
//! - [`frame`]: the inner frames a transport packet seals (data, probe, probe answer, close,
//!   advert);
//! - [`payload`]: the handshake payloads inside Noise (flags and candidates);
//! - [`ipv6`]: the IPv6 packets the tunnel carries (header checks, ICMPv6 Packet Too Big).
//!
//! Every parser reads untrusted bytes through one checked [`Reader`]: a read that would run past
//! the end returns [`Truncated`] naming the field, and [`Reader::finish`] rejects trailing bytes.
//! After a length check succeeds no accessor can panic, so a parser built on it cannot either.

pub mod addr;
pub mod frame;
pub mod ipv6;
pub mod packet;
pub mod payload;

use std::net::SocketAddr;

/// A read ran past the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} truncated: need {need} bytes, have {have}")]
pub struct Truncated {
    /// The field being read.
    pub field: &'static str,
    /// Bytes the field needs.
    pub need: usize,
    /// Bytes that were left.
    pub have: usize,
}

/// Bytes were left after the end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} trailing bytes after the end of the message")]
pub struct Trailing(pub usize);

/// A cursor over untrusted bytes. Every read checks the length first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes read so far (the offset of the next field).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Everything not yet read, which is then consumed.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        let have = self.remaining();
        if n > have {
            return Err(Truncated {
                field,
                need: n,
                have,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// One socket address in the shared encoding ([`addr`]).
    pub fn addr(&mut self) -> Result<SocketAddr, addr::AddrError> {
        let (a, len) = addr::parse(&self.bytes[self.pos..])?;
        self.pos += len;
        Ok(a)
    }

    /// Ends the message: anything left is an error.
    pub fn finish(self) -> Result<(), Trailing> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_in_order_and_names_the_short_field() {
        let bytes = [1, 0, 2, 0, 0, 0, 3, 9, 9];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("kind"), Ok(1));
        assert_eq!(r.u16("port"), Ok(2));
        assert_eq!(r.u32("index"), Ok(3));
        assert_eq!(r.position(), 7);
        assert_eq!(
            r.u64("counter"),
            Err(Truncated {
                field: "counter",
                need: 8,
                have: 2
            })
        );
        assert_eq!(r.clone().finish(), Err(Trailing(2)));
        assert_eq!(r.rest(), &[9, 9]);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn addresses_advance_by_their_encoded_length() {
        let mut bytes = Vec::new();
        addr::emit(&"192.0.2.1:7".parse().unwrap(), &mut bytes);
        bytes.push(0xAA);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.addr(), Ok("192.0.2.1:7".parse().unwrap()));
        assert_eq!(r.u8("tail"), Ok(0xAA));
        assert!(r.addr().is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), ops in proptest::collection::vec(0u8..7, 0..16)) {
            let mut r = Reader::new(&bytes);
            for op in ops {
                let _ = match op {
                    0 => r.u8("a").map(|_| ()),
                    1 => r.u16("a").map(|_| ()),
                    2 => r.u32("a").map(|_| ()),
                    3 => r.u64("a").map(|_| ()),
                    4 => r.take(5, "a").map(|_| ()),
                    5 => r.addr().map(|_| ()).map_err(|_| Truncated { field: "", need: 0, have: 0 }),
                    _ => r.array::<3>("a").map(|_| ()),
                };
                prop_assert!(r.position() <= bytes.len());
            }
        }
    }
}
