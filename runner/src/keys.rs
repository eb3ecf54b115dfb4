//! Ed25519 keys: loading, generating and naming them.
//!
//! Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), public keys
//! SPKI PEM (`-----BEGIN PUBLIC KEY-----`), so keys made by
//! `openssl genpkey -algorithm ed25519` load as they are. A key's id is the
//! SHA-256 of its 32-byte public key. This module owns key material and its
//! file formats; it decides nothing about what a key is trusted for.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::fsio::{ReadError, read_bounded};

/// Largest key file we read; real ones are a few hundred bytes.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Why a key could not be loaded, generated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a key of the expected form.
    #[error("key file {path} is not {expected}: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected, e.g. "an Ed25519 private key in PKCS#8 PEM".
        expected: &'static str,
        /// What the parser said.
        detail: String,
    },
    /// Refusing to replace an existing key.
    #[error(
        "{0} already exists; refusing to overwrite a key (move it away or choose another name)"
    )]
    Exists(PathBuf),
    /// A key pair's base name that is not a plain file name.
    #[error(
        "key name `{0}` must be a plain file name (no `/` or `\\`, not empty, not starting with `.`)"
    )]
    Name(String),
    /// The key file could not be read, or is larger than any key file.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The operating system's random source failed.
    #[error("could not get randomness for a new key: {0}")]
    Random(String),
}

/// The SHA-256 of a raw 32-byte Ed25519 public key; how records and signatures name their key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The first 8 bytes in hex, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

/// The public demo keys shipped in `keys/` (name, SPKI PEM): their private
/// halves are in the repository, so anything they sign proves nothing.
const DEMO_KEYS: [(&str, &str); 4] = [
    ("demo-runner", include_str!("../../keys/demo-runner.pub")),
    (
        "demo-publisher",
        include_str!("../../keys/demo-publisher.pub"),
    ),
    ("demo-partner", include_str!("../../keys/demo-partner.pub")),
    ("demo-root", include_str!("../../keys/demo-root.pub")),
];

/// The name of the public demo key with this id (`demo-runner`, …), if it is one.
/// Its private key is published in this repository: a record, capsule or
/// trust root it signed proves nothing, and every report says so.
pub fn demo_key_name(id: &KeyId) -> Option<&'static str> {
    static IDS: std::sync::OnceLock<Vec<(&'static str, KeyId)>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        DEMO_KEYS
            .iter()
            .filter_map(|(name, pem)| {
                VerifyingKey::from_public_key_pem(pem.trim())
                    .ok()
                    .map(|k| (*name, KeyId::of(&k)))
            })
            .collect()
    })
    .iter()
    .find(|(_, known)| known == id)
    .map(|(name, _)| *name)
}

/// A private signing key with its id. Zeroized on drop by `ed25519-dalek`.
pub struct SecretKey {
    key: SigningKey,
    id: KeyId,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id.short())
    }
}

impl SecretKey {
    /// Generates a key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self::from_signing_key(key))
    }

    /// Wraps an existing `ed25519-dalek` key.
    pub fn from_signing_key(key: SigningKey) -> Self {
        let id = KeyId::of(&key.verifying_key());
        Self { key, id }
    }

    /// Parses a PKCS#8 PEM private key; `origin` names it in errors.
    pub fn from_pem(pem: &str, origin: &Path) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(Self::from_signing_key)
            .map_err(|e| KeyError::Format {
                path: origin.to_path_buf(),
                expected: "an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY)",
                detail: other_algorithm(pem, KeyForm::Private).unwrap_or_else(|| e.to_string()),
            })
    }

    /// Loads a PKCS#8 PEM private key from a file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read_small(path)?, path)
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_verifying_key(self.key.verifying_key())
    }

    /// Signs `message` (pure Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    /// A 32-byte secret for `purpose`, derived from this key with HMAC-SHA256
    /// (key = the Ed25519 seed, message = `purpose`). Different purposes give
    /// unrelated secrets, and none reveals the signing key.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key as PKCS#8 v1 PEM (RFC 5208: the private key alone, as
    /// `openssl genpkey` writes it). The v2 form (RFC 5958, public key
    /// attached) is refused by OpenSSL 3.0 and Python's `cryptography`;
    /// [`SecretKey::from_pem`] reads both.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| KeyError::Format {
            path: PathBuf::new(),
            expected: "an encodable Ed25519 key",
            detail: e.to_string(),
        })
    }

    /// Writes `DIR/NAME.key` (mode 0600) and `DIR/NAME.pub`, refusing to overwrite
    /// either and refusing a `name` that is not a plain file name.
    pub fn write_pair(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(KeyError::Name(name.to_string()));
        }
        fs::create_dir_all(dir).map_err(|source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        for path in [&private, &public] {
            if path.exists() {
                return Err(KeyError::Exists(path.clone()));
            }
        }
        write_new(&private, self.to_pem()?.as_bytes(), true)?;
        write_new(&public, self.public().to_pem()?.as_bytes(), false)?;
        Ok((private, public))
    }
}

/// A public verifying key with its id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id.short())
    }
}

impl PublicKey {
    /// Wraps an existing `ed25519-dalek` key.
    pub fn from_verifying_key(key: VerifyingKey) -> Self {
        Self {
            id: KeyId::of(&key),
            key,
        }
    }

    /// Parses a raw 32-byte public key, rejecting invalid encodings and weak
    /// (small-order) points.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let raw: [u8; 32] = bytes.try_into().ok()?;
        VerifyingKey::from_bytes(&raw)
            .ok()
            .filter(|key| !key.is_weak() && is_canonical(key))
            .map(Self::from_verifying_key)
    }

    /// True for a small-order key, which signatures cannot bind to one signer.
    pub fn is_weak(&self) -> bool {
        self.key.is_weak()
    }

    /// Parses an SPKI PEM public key; `origin` names it in errors. A weak
    /// (small-order) key is refused: signatures under it prove nothing.
    pub fn from_pem(pem: &str, origin: &Path) -> Result<Self, KeyError> {
        let format = |detail: String| KeyError::Format {
            path: origin.to_path_buf(),
            expected: "an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY)",
            detail,
        };
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            format(other_algorithm(pem, KeyForm::Public).unwrap_or_else(|| e.to_string()))
        })?;
        if key.is_weak() {
            return Err(format(format!(
                "{} is a small-order (weak) point, under which a forged signature can verify; use a key made by `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`",
                hex::encode(key.as_bytes())
            )));
        }
        if !is_canonical(&key) {
            return Err(format(format!(
                "{} is not the canonical encoding of its point, so one key would have two key ids; use a key made by `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`",
                hex::encode(key.as_bytes())
            )));
        }
        Ok(Self::from_verifying_key(key))
    }

    /// Loads an SPKI PEM public key from a file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read_small(path)?, path)
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The raw 32-byte key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Format {
                path: PathBuf::new(),
                expected: "an encodable Ed25519 key",
                detail: e.to_string(),
            })
    }

    /// Verifies with RFC 8032's strict rules (`verify_strict`): rejects
    /// non-canonical `S`, small-order `R` and weak keys, so one message has one
    /// valid signature per key.
    pub fn verify_strict(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }
}

/// Whether `key`'s 32 bytes are the one canonical encoding of its point (a
/// y coordinate of p or more encodes the same point as y - p).
fn is_canonical(key: &VerifyingKey) -> bool {
    key.to_edwards().compress().to_bytes() == *key.as_bytes()
}

/// Which PEM form a key file should have.
#[derive(Clone, Copy)]
enum KeyForm {
    Private,
    Public,
}

/// The RFC 8410 object identifier of Ed25519.
const ED25519_OID: &str = "1.3.101.112";

/// When a PEM key parses as PKCS#8 or SPKI but holds another algorithm than
/// Ed25519: that algorithm, in words, and the fix. (The Ed25519 decoder's own
/// error names the OID it *expected*, which reads as if the key were Ed25519.)
fn other_algorithm(pem: &str, form: KeyForm) -> Option<String> {
    use ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef;
    use ed25519_dalek::pkcs8::{Document, PrivateKeyInfo};
    let (_, document) = Document::from_pem(pem.trim()).ok()?;
    let oid = match form {
        KeyForm::Private => PrivateKeyInfo::try_from(document.as_bytes())
            .ok()?
            .algorithm
            .oid
            .to_string(),
        KeyForm::Public => SubjectPublicKeyInfoRef::try_from(document.as_bytes())
            .ok()?
            .algorithm
            .oid
            .to_string(),
    };
    if oid == ED25519_OID {
        return None;
    }
    let name = match oid.as_str() {
        "1.2.840.113549.1.1.1" => "an RSA key",
        "1.2.840.113549.1.1.10" => "an RSA-PSS key",
        "1.2.840.10045.2.1" => "an elliptic-curve (ECDSA) key",
        "1.3.101.110" => "an X25519 key",
        "1.3.101.111" => "an X448 key",
        "1.3.101.113" => "an Ed448 key",
        _ => "a key of another algorithm",
    };
    Some(format!(
        "it holds {name} (algorithm OID {oid}), not an Ed25519 one (OID {ED25519_OID}); make an Ed25519 key with `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`"
    ))
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let bytes = read_bounded(path, MAX_KEY_FILE, "key file")?;
    String::from_utf8(bytes).map_err(|_| KeyError::Format {
        path: path.to_path_buf(),
        expected: "a PEM key file",
        detail: "not UTF-8 text (a DER key? convert with `openssl pkey -outform PEM`)".into(),
    })
}

/// Creates `path` (it must not exist), writes `data`, and syncs it to disk.
fn write_new(path: &Path, data: &[u8], private: bool) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(data).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_key_is_known_by_name_and_no_other_key_is() {
        for (name, pem) in DEMO_KEYS {
            let key = PublicKey::from_pem(pem, Path::new(name)).unwrap();
            assert_eq!(demo_key_name(&key.id()), Some(name));
        }
        let private = include_str!("../../keys/demo-runner.key");
        let runner = SecretKey::from_pem(private, Path::new("demo-runner.key")).unwrap();
        assert_eq!(demo_key_name(&runner.id()), Some("demo-runner"));
        assert_eq!(demo_key_name(&SecretKey::generate().unwrap().id()), None);
    }

    #[test]
    fn private_keys_are_written_as_pkcs8_v1_like_openssl() {
        use base64::Engine;
        let key = SecretKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        // `openssl genpkey -algorithm ed25519` writes exactly this: SEQUENCE {
        // version 0 (v1), AlgorithmIdentifier id-Ed25519, OCTET STRING { 32 bytes } }.
        let openssl_prefix = hex::decode("302e020100300506032b657004220420").unwrap();
        assert_eq!(der.len(), 48, "no public key attached (that is v2)");
        assert_eq!(der[..16], openssl_prefix[..]);
        assert_eq!(der[16..], key.key.to_bytes());
    }

    #[test]
    fn pkcs8_v2_keys_made_by_other_tools_still_load() {
        let key = SecretKey::generate().unwrap();
        // dalek's own encoder writes v2 (RFC 5958, public key attached).
        let v2 = key.key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let loaded = SecretKey::from_pem(&v2, Path::new("v2.key")).unwrap();
        assert_eq!(loaded.id(), key.id());
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = SecretKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SecretKey::from_pem(&pem, Path::new("mem")).unwrap();
        assert_eq!(again.id(), key.id());
        let public =
            PublicKey::from_pem(&key.public().to_pem().unwrap(), Path::new("mem")).unwrap();
        let sig = key.sign(b"hello");
        assert!(public.verify_strict(b"hello", &sig.to_bytes()));
        assert!(!public.verify_strict(b"hellO", &sig.to_bytes()));
    }

    #[test]
    fn write_pair_sets_private_mode_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate().unwrap();
        let (private, _) = key.write_pair(dir.path(), "k").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&private).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(matches!(
            key.write_pair(dir.path(), "k"),
            Err(KeyError::Exists(_))
        ));
        for name in ["", "../k", "a/b", "a\\b", ".hidden"] {
            assert!(
                matches!(key.write_pair(dir.path(), name), Err(KeyError::Name(_))),
                "{name:?}"
            );
        }
    }

    /// An RSA-512 key pair made by `openssl genpkey -algorithm rsa` (a test fixture, never used).
    const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAzIBZuM37ftBXbhIm\nKujDg7t7KV4tcTb6qguFQk/FTx4WqYXJMuDh0N9LQYksetrH/9KQ9DQjv/bL0jIZ\nX/nSjwIDAQABAkB2MPQqB/qDh3wQZLLkd9SP7So4dXLEDSeAYdopwhriJxPF1Uoc\n/DMY6U8D6HDr0UQPC6nGLWfmcEzFIk/+FBzhAiEA8clazxeE7NbTbvoTU8ApisSB\n/xnM3sB4SFAfpGhBpFECIQDYheQo0/pvUMj01r+1AD0A6i9YWCJ3Gfk3gpeKv5Sw\n3wIhAKumJP+sVMPG5yd8BciJPXS0eQ1fhaAFx96eczhGg4NhAiB58OXvLHr1KA0U\n/sCWwlyY4ErruS8n3mPhpFWOWZj3BwIhALNUgquMauyokDTuCAq007Xf3G5KKIOS\nE+m5Ca0RrXij\n-----END PRIVATE KEY-----\n";
    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMyAWbjN+37QV24SJirow4O7eyleLXE2\n+qoLhUJPxU8eFqmFyTLg4dDfS0GJLHrax//SkPQ0I7/2y9IyGV/50o8CAwEAAQ==\n-----END PUBLIC KEY-----\n";

    /// Issue 13.6: an RSA key is named as RSA with its own OID, not with Ed25519's.
    #[test]
    fn an_rsa_key_is_named_by_its_own_algorithm() {
        let err = SecretKey::from_pem(RSA_KEY, Path::new("rsa.key")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key file rsa.key is not an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY): it holds an RSA key (algorithm OID 1.2.840.113549.1.1.1), not an Ed25519 one (OID 1.3.101.112); make an Ed25519 key with `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`"
        );
        let err = PublicKey::from_pem(RSA_PUB, Path::new("rsa.pub")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key file rsa.pub is not an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY): it holds an RSA key (algorithm OID 1.2.840.113549.1.1.1), not an Ed25519 one (OID 1.3.101.112); make an Ed25519 key with `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`"
        );
    }

    /// Issue 13.5: small-order public keys are refused, in PEM and raw.
    #[test]
    fn small_order_public_keys_are_refused() {
        use base64::Engine;
        // The eight small-order points of edwards25519 (identity, order 2, 4, 8), canonically encoded.
        let small_order = [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        ];
        for point in small_order {
            let raw = hex::decode(point).unwrap();
            assert!(PublicKey::from_bytes(&raw).is_none(), "{point}");
            let mut der = hex::decode("302a300506032b6570032100").unwrap();
            der.extend_from_slice(&raw);
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(&der)
            );
            let err = PublicKey::from_pem(&pem, Path::new("weak.pub")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "key file weak.pub is not an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY): {point} is a small-order (weak) point, under which a forged signature can verify; use a key made by `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`"
                )
            );
        }
        let genuine = SecretKey::generate().unwrap().public();
        assert!(PublicKey::from_bytes(genuine.as_bytes()).is_some());
    }

    /// A point whose y is encoded as y + p: one key, two key ids, refused.
    #[test]
    fn non_canonical_public_key_encodings_are_refused() {
        use base64::Engine;
        // y = 3 + p, a point of large order (y = 3 encodes it canonically).
        let point = "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f";
        let raw = hex::decode(point).unwrap();
        assert!(PublicKey::from_bytes(&raw).is_none());
        let mut der = hex::decode("302a300506032b6570032100").unwrap();
        der.extend_from_slice(&raw);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let err = PublicKey::from_pem(&pem, Path::new("two-ids.pub")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "key file two-ids.pub is not an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY): {point} is not the canonical encoding of its point, so one key would have two key ids; use a key made by `edge-runner keys generate` or `openssl genpkey -algorithm ed25519`"
            )
        );
    }

    #[test]
    fn public_key_is_not_a_private_key() {
        let key = SecretKey::generate().unwrap();
        let err =
            SecretKey::from_pem(&key.public().to_pem().unwrap(), Path::new("x.pub")).unwrap_err();
        assert!(
            err.to_string()
                .contains("x.pub is not an Ed25519 private key"),
            "{err}"
        );
    }
}
