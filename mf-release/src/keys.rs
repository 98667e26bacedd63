//! ed25519 keys for signing manifests, in one-line text files (spec/RELEASE.md "Keys").

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const SECRET_PREFIX: &str = "mf-ed25519-secret:";
const PUBLIC_PREFIX: &str = "mf-ed25519:";

/// The secret half: signs manifests. Keep it off the release servers.
pub struct SecretKey(SigningKey);

/// The public half: what clients are given to verify manifests.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::BadKey { origin: "keygen".into(), what: format!("no randomness: {e}") })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Parses the text of a `.key` file.
    pub fn parse(text: &str, origin: &str) -> Result<SecretKey> {
        let bad = |what: &str| Error::BadKey { origin: origin.to_owned(), what: what.to_owned() };
        let body = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            bad(if text.trim().starts_with(PUBLIC_PREFIX) {
                "this is a public key; signing needs the secret .key file"
            } else {
                "not an mf secret key (expected 'mf-ed25519-secret:<base64>')"
            })
        })?;
        let bytes = BASE64.decode(body).map_err(|e| bad(&format!("bad base64: {e}")))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads a `.key` file.
    pub fn load(path: &Path) -> Result<SecretKey> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        SecretKey::parse(&text, &path.display().to_string())
    }

    /// Writes the `.key` file at `path` with mode 0600 from the start. Without `replace` the file is
    /// created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`): anything already there, even a dangling
    /// symlink, is an error, so the key is never written through a link or into a file someone else
    /// holds open. With `replace`, the key goes to a fresh 0600 temp file that is renamed over
    /// `path`: a symlink there is replaced (not followed), and the old file's mode is not kept.
    pub fn write_to(&self, path: &Path, replace: bool) -> Result<()> {
        use std::io::Write;
        let io = |e| Error::io(path, e);
        let dir_path = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")))?;
        let dir = mf_format::fs::Dir::open(dir_path).map_err(io)?;
        if replace {
            let mut temp = dir.create_temp(&format!(".{}.", name.to_string_lossy()), ".mf-tmp").map_err(io)?;
            temp.file().write_all(self.to_text().as_bytes()).map_err(io)?;
            temp.persist(name).map_err(io)?; // created 0600, fsynced, renamed over the old one
        } else {
            let mut file = dir.create_file_exclusive(name, 0o600).map_err(io)?;
            file.write_all(self.to_text().as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
        }
        dir.sync().map_err(io)
    }

    /// The `.key` file's text.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", BASE64.encode(self.0.to_bytes()))
    }

    /// The public half, for clients and for the `keyid` of signatures.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// An ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl PublicKey {
    /// Parses a `.pub` file's text.
    pub fn parse(text: &str, origin: &str) -> Result<PublicKey> {
        let bad = |what: &str| Error::BadKey { origin: origin.to_owned(), what: what.to_owned() };
        let text = text.trim();
        if text.starts_with(SECRET_PREFIX) {
            return Err(bad("this is a secret key; give clients the .pub file"));
        }
        let body = text
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| bad("not an mf public key (expected 'mf-ed25519:<base64>')"))?;
        let bytes = BASE64.decode(body).map_err(|e| bad(&format!("bad base64: {e}")))?;
        let raw: [u8; 32] = bytes.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&raw).map(PublicKey).map_err(|_| bad("not a valid ed25519 public key"))
    }

    /// Accepts either the key's one-line text or the path of a `.pub` file holding it.
    pub fn from_arg(arg: &str) -> Result<PublicKey> {
        if arg.trim_start().starts_with(PUBLIC_PREFIX) {
            return PublicKey::parse(arg, "--key");
        }
        let path = Path::new(arg);
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        PublicKey::parse(&text, arg)
    }

    /// The `.pub` file's text.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}\n", BASE64.encode(self.0.to_bytes()))
    }

    /// First 8 bytes of the SHA-256 of the key, in hex: names the key in a manifest's signatures.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }

    /// True when `signature` is this key's strict ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else { return false };
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_signatures() {
        let key = SecretKey::generate().unwrap();
        let again = SecretKey::parse(&key.to_text(), "t").unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_text(), "t").unwrap();
        let sig = key.sign(b"manifest");
        assert!(public.verify(b"manifest", &sig));
        assert!(!public.verify(b"manifest!", &sig));
        assert!(!public.verify(b"manifest", &sig[..63]));
        let other = SecretKey::generate().unwrap();
        assert!(!other.public().verify(b"manifest", &sig));
    }

    #[test]
    fn the_wrong_half_is_named() {
        let key = SecretKey::generate().unwrap();
        let err = PublicKey::parse(&key.to_text(), "k").unwrap_err().to_string();
        assert!(err.contains("secret key"), "{err}");
        let err = SecretKey::parse(&key.public().to_text(), "k").unwrap_err().to_string();
        assert!(err.contains("public key"), "{err}");
        assert!(PublicKey::parse("mf-ed25519:AAAA", "k").is_err());
    }
}
