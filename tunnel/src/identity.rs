//! Node identity: an ed25519 key pair; the public key is the [`NodeId`].
//!
//! Text form of a NodeId: lowercase, unpadded RFC 4648 base32 of the 32 key bytes (52 characters).
//! The identity file holds the 32-byte secret seed in the same base32 form after a header line,
//! and must be readable by its owner only (`docs/protocol.md` §"Identity").

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use data_encoding::Encoding;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::overlay;

/// Length of a NodeId in bytes (an ed25519 public key).
pub const NODE_ID_LEN: usize = 32;
/// Length of a NodeId in its text form.
pub const NODE_ID_TEXT_LEN: usize = 52;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410 §7): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// First line of an identity file.
const IDENTITY_HEADER: &str = "shipworm-identity-v1";

/// Lowercase, unpadded RFC 4648 base32: the text form of keys and tickets.
pub fn base32() -> Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    // Only canonical encodings decode: one text per value, so ids compare as text too.
    spec.check_trailing_bits = true;
    spec.encoding()
        .expect("static base32 specification is valid")
}

/// A node's public identity: its ed25519 public key, checked to be a valid curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; NODE_ID_LEN]);

/// Why bytes or text are not a NodeId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Wrong text length.
    #[error("a node id is {NODE_ID_TEXT_LEN} base32 characters, got {0}")]
    TextLength(usize),
    /// A character outside lowercase base32.
    #[error("a node id is lowercase base32 (a-z, 2-7): {0}")]
    Base32(String),
    /// The 32 bytes are not an ed25519 public key.
    #[error("not a valid ed25519 public key")]
    InvalidKey,
}

impl NodeId {
    /// Reads a NodeId from its 32 key bytes, rejecting bytes that are not a curve point.
    pub fn from_bytes(bytes: &[u8; NODE_ID_LEN]) -> Result<Self, NodeIdError> {
        VerifyingKey::from_bytes(bytes).map_err(|_| NodeIdError::InvalidKey)?;
        Ok(Self(*bytes))
    }

    /// Reads a NodeId from the front of a slice of at least 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, NodeIdError> {
        let arr: &[u8; NODE_ID_LEN] = bytes
            .get(..NODE_ID_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(NodeIdError::InvalidKey)?;
        Self::from_bytes(arr)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// The ed25519 key, for verifying signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        // Checked at construction.
        VerifyingKey::from_bytes(&self.0).expect("NodeId holds a validated key")
    }

    /// Checks `signature` over `message` with this key (strict: no malleable or small-order keys).
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.verifying_key().verify_strict(message, &sig).is_ok()
    }

    /// The X25519 public key of this node's Noise static key: the Montgomery form of the ed25519 key
    /// (the birational map of RFC 7748 §4.1), so one key pair serves signatures and Diffie-Hellman.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.verifying_key().to_montgomery().to_bytes()
    }

    /// This node's overlay IPv6 address: the project's ULA /48 and 80 bits of a key hash.
    pub fn overlay_addr(&self) -> std::net::Ipv6Addr {
        overlay::address_of(self)
    }

    /// A short form for logs: the first 10 text characters.
    pub fn fmt_short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(10);
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32().encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.fmt_short())
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != NODE_ID_TEXT_LEN {
            return Err(NodeIdError::TextLength(s.len()));
        }
        let bytes = base32()
            .decode(s.as_bytes())
            .map_err(|e| NodeIdError::Base32(e.to_string()))?;
        let arr: [u8; NODE_ID_LEN] = bytes.try_into().map_err(|_| NodeIdError::InvalidKey)?;
        Self::from_bytes(&arr)
    }
}

/// A node's secret key. Never printed; zeroed on drop.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

// The key is the only field, and ed25519-dalek (feature `zeroize`) wipes it on drop; the
// compiler checks that it still does.
impl ZeroizeOnDrop for Identity {}
const _: () = {
    const fn wiped<T: ZeroizeOnDrop>() {}
    wiped::<SigningKey>()
};

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.node_id().fmt_short())
    }
}

/// Why an identity file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error(
        "identity file {path} is accessible by other users (mode {mode:04o}); \
         a secret key must be private: run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not an identity file.
    #[error("identity file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Identity {
    /// A fresh random identity from the OS random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..]).expect("the OS random source is unavailable");
        Self::from_seed(&seed)
    }

    /// The identity with this 32-byte secret seed (deterministic: for tests and key import).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public NodeId.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// The 32-byte secret seed (for handing to TLS and Noise layers).
    pub fn secret_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The secret key as an RFC 8410 PKCS#8 v1 document (for TLS), built in place in a buffer
    /// that is wiped when dropped: hand the TLS layer a borrow of it, never a copy it keeps.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(Vec::with_capacity(ED25519_PKCS8_PREFIX.len() + 32));
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(&self.secret_seed()[..]);
        der
    }

    /// The X25519 secret matching [`NodeId::x25519_public`] (the clamped ed25519 scalar).
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_scalar_bytes())
    }

    /// Loads the identity at `path`, refusing a file that others can read.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        // One open: the mode is checked on the file that is then read, not on whatever the path
        // names a moment earlier.
        let mut file = std::fs::File::open(path).map_err(io)?;
        check_private(path, &file.metadata().map_err(io)?)?;
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut file, &mut text).map_err(io)?;
        let malformed = |reason: &str| IdentityError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(IDENTITY_HEADER) {
            return Err(malformed(&format!(
                "first line must be `{IDENTITY_HEADER}`"
            )));
        }
        let seed_text = lines
            .next()
            .ok_or_else(|| malformed("missing key line"))?
            .trim();
        let seed = Zeroizing::new(
            base32()
                .decode(seed_text.as_bytes())
                .map_err(|_| malformed("key line is not lowercase base32"))?,
        );
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| malformed("key line must hold exactly 32 bytes"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(malformed("unexpected content after the key line"));
        }
        Ok(Self::from_seed(seed))
    }

    /// Writes this identity to a new file at `path` with mode 0600; never overwrites.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let text = Zeroizing::new(format!(
            "{IDENTITY_HEADER}\n{}\n",
            base32().encode(&self.secret_seed()[..])
        ));
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads `path`, or creates it with a fresh identity if it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let id = Self::generate();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                id.save(path)?;
                Ok(id)
            }
            other => other,
        }
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), IdentityError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1 test 1: secret seed and public key.
    const RFC8032_SEED: [u8; 32] = [
        0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c,
        0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae,
        0x7f, 0x60,
    ];

    #[test]
    fn node_id_text_vector() {
        let id = Identity::from_seed(&RFC8032_SEED).node_id();
        assert_eq!(
            hex(id.as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            id.to_string(),
            "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
        );
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn node_id_rejects_bad_text() {
        assert_eq!("abc".parse::<NodeId>(), Err(NodeIdError::TextLength(3)));
        let upper = "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENA";
        assert!(matches!(
            upper.parse::<NodeId>(),
            Err(NodeIdError::Base32(_))
        ));
        // Non-canonical trailing bits: the same bytes must have one text only.
        let noncanon = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenb";
        assert!(noncanon.parse::<NodeId>().is_err());
    }

    #[test]
    fn sign_and_verify() {
        let id = Identity::from_seed(&RFC8032_SEED);
        let sig = id.sign(b"");
        // RFC 8032 §7.1 test 1 signature of the empty message.
        assert_eq!(&hex(&sig)[..32], "e5564300c360ac729086e2cc806e828a");
        assert!(id.node_id().verify(b"", &sig));
        assert!(!id.node_id().verify(b"x", &sig));
    }

    #[test]
    fn key_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let path = dir.path().join("id");
        let id = Identity::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Identity::load(&path).unwrap().node_id(), id.node_id());
        assert_eq!(
            Identity::load_or_create(&path).unwrap().node_id(),
            id.node_id()
        );
        // Never overwrites.
        assert!(id.save(&path).is_err());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
            "{text}"
        );
        assert!(text.contains("chmod 600"), "{text}");
    }

    #[test]
    fn malformed_key_file_says_why() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let path = dir.path().join("id");
        std::fs::write(&path, "shipworm-identity-v1\nnot base32!\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.contains("not lowercase base32"), "{err}");
    }

    #[test]
    fn pkcs8_document_holds_the_same_key() {
        use ring::signature::KeyPair;
        let id = Identity::from_seed(&RFC8032_SEED);
        let der = id.pkcs8_der();
        assert_eq!(
            der.len(),
            der.capacity(),
            "built in place: no reallocated copy"
        );
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
        assert_eq!(pair.public_key().as_ref(), id.node_id().as_bytes());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Removed when the test ends.
    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("shipworm-id-")
            .tempdir()
            .unwrap()
    }
}
