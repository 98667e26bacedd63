//! The manifest and the file table, as spec/RELEASE.md describes them, with signing and verification.
//!
//! A manifest is only ever read through [`Manifest::verify`] (clients) or [`Manifest::load_for_publish`]
//! (publishers): both check the structure, and the first also the signature, type and expiry.

use std::collections::HashSet;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::is_sha256_hex;
use crate::keys::{PublicKey, SecretKey};

/// The manifest's `type`; clients refuse any other.
pub const MANIFEST_TYPE: &str = "mf-release-manifest";
/// A file table's `type`; clients refuse any other.
pub const FILE_TABLE_TYPE: &str = "mf-file-table";
/// The `spec_version` of manifests and file tables this code writes and reads; clients refuse others.
pub const SPEC_VERSION: u32 = 1;
/// The manifest's path in a repository: the one name clients fetch and publishers write.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Clients refuse manifests larger than this (TUF's "endless data" attack).
pub const MAX_MANIFEST_SIZE: u64 = 16 << 20;
/// Clients refuse file tables whose JSON is larger than this (a million entries fit).
pub const MAX_FILE_TABLE_JSON: u64 = 512 << 20;
/// The name of the client's state directory inside an install folder; never a release path.
pub const STATE_DIR_NAME: &str = ".mf-update";

/// The whole `manifest.json`: the signed part and its signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The signed part ([`Manifest`]) as parsed JSON, so unknown fields stay covered by the signature.
    pub signed: serde_json::Value,
    /// Signatures over the canonical JSON of `signed`; empty for an unsigned repository.
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
/// One ed25519 signature of the manifest (spec/RELEASE.md "Signatures").
pub struct Signature {
    /// First 8 bytes, in hex, of the SHA-256 of the signing public key.
    pub keyid: String,
    /// The 64-byte ed25519 signature, base64.
    pub sig: String,
}

/// The signed part of the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    #[serde(rename = "type")]
    /// `type`: [`MANIFEST_TYPE`].
    pub kind: String,
    /// [`SPEC_VERSION`].
    pub spec_version: u32,
    /// At least 1; every rewrite increases it by one, and clients refuse one older than they trusted.
    pub manifest_version: u64,
    /// RFC 3339 UTC time after which clients refuse the manifest.
    pub expires: String,
    /// Published versions, oldest first; the last is the newest.
    pub versions: Vec<Version>,
}

/// One published version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Version {
    /// Unique name, 1-128 characters of `[A-Za-z0-9._+-]`.
    pub version: String,
    /// RFC 3339 UTC time of publication (informational).
    pub published: String,
    /// The version's whole archive.
    pub full: ObjectRef,
    /// The version's file table (zstd-compressed JSON, [`FileTable`]).
    pub files: ObjectRef,
    #[serde(default)]
    /// Patches whose result is this version, each from an earlier version.
    pub patches: Vec<PatchRef>,
    /// The archive's block hash table (`blocks/<sha256>.bin`, spec/RELEASE.md "Block hash tables and
    /// mounting from a repository"); absent in versions published before tables existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<ObjectRef>,
}

/// A file of the repository, by path, size and SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// Release path relative to the repository root (`/`-separated, no `.` or `..`).
    pub path: String,
    /// Length in bytes; a download longer or shorter is refused.
    pub size: u64,
    /// SHA-256 of the object, 64 lowercase hex digits.
    pub sha256: String,
}

/// A patch that produces the version it is listed under from version `from`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PatchRef {
    /// The version the patch applies to (listed earlier in the manifest).
    pub from: String,
    #[serde(flatten)]
    /// The patch file.
    pub object: ObjectRef,
}

/// A version's archive described entry by entry (spec/RELEASE.md "File table").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileTable {
    #[serde(rename = "type")]
    /// `type`: [`FILE_TABLE_TYPE`].
    pub kind: String,
    /// [`SPEC_VERSION`].
    pub spec_version: u32,
    /// The version the table describes.
    pub version: String,
    /// The archive footer's `index_hash`, 16 hex digits.
    pub archive_index_hash: String,
    /// Entries in the archive's data order: entry `i` is old entry `i` of every patch from this version.
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
/// One entry of a [`FileTable`]: a file of an install folder of that version.
pub struct FileEntry {
    /// Release path of the file (relative, `/`-separated, never under [`STATE_DIR_NAME`]).
    pub path: String,
    /// Content length in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// SHA-256 of the content, 64 lowercase hex digits: what a folder scan compares.
    pub sha256: String,
    /// xxh3-64 of the content as the archive stores it, 16 hex digits: what patches check old entries against.
    pub xxh3: String,
}

/// The OLPC canonical JSON of a value: the bytes a signature covers.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    // Serializing a `Value` into memory cannot fail: no I/O error, no non-string keys.
    if value.serialize(&mut serializer).is_err() {
        out.clear();
    }
    out
}

/// An RFC 3339 UTC timestamp to the second.
pub fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn parse_time(text: &str, origin: &str, field: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339(text)
        .map_err(|e| Error::metadata(origin, format!("{field} {text:?} is not an RFC 3339 UTC time: {e}")))
}

/// True for a valid version string: 1 to 128 characters of `[A-Za-z0-9._+-]`.
pub fn is_valid_version(version: &str) -> bool {
    (1..=128).contains(&version.len())
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

impl Manifest {
    /// An empty manifest, before its first version.
    pub fn empty() -> Manifest {
        Manifest {
            kind: MANIFEST_TYPE.to_owned(),
            spec_version: SPEC_VERSION,
            manifest_version: 0,
            expires: String::new(),
            versions: Vec::new(),
        }
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// The version named `name`, if the manifest lists it.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == name)
    }

    /// Position of a version in publication order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.version == name)
    }

    /// The expiry time (checked by [`Manifest::validate`]).
    pub fn expires_at(&self) -> Result<SystemTime> {
        parse_time(&self.expires, "manifest", "expires")
    }

    /// Checks everything a client relies on besides the signature: type, spec version, version
    /// names, object paths and hashes, patch sources.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |what: String| Error::metadata(origin, what);
        if self.kind != MANIFEST_TYPE {
            return Err(bad(format!("type is {:?}, not {MANIFEST_TYPE:?}", self.kind)));
        }
        if self.spec_version != SPEC_VERSION {
            return Err(bad(format!(
                "spec_version {} is not supported (this mf reads {SPEC_VERSION})",
                self.spec_version
            )));
        }
        if self.manifest_version == 0 {
            return Err(bad("manifest_version must be at least 1".into()));
        }
        parse_time(&self.expires, origin, "expires")?;
        let mut seen = HashSet::new();
        for version in &self.versions {
            let name = &version.version;
            if !is_valid_version(name) {
                return Err(bad(format!("version {name:?} is not 1-128 characters of [A-Za-z0-9._+-]")));
            }
            parse_time(&version.published, origin, &format!("version {name}: published"))?;
            check_object(&version.full, origin, &format!("version {name}: full"))?;
            check_object(&version.files, origin, &format!("version {name}: files"))?;
            if let Some(blocks) = &version.blocks {
                check_object(blocks, origin, &format!("version {name}: blocks"))?;
            }
            for patch in &version.patches {
                if !seen.contains(patch.from.as_str()) {
                    return Err(bad(format!(
                        "version {name}: patch from {:?}, which is not an earlier version",
                        patch.from
                    )));
                }
                check_object(&patch.object, origin, &format!("version {name}: patch from {}", patch.from))?;
            }
            if !seen.insert(name.as_str()) {
                return Err(bad(format!("version {name} is listed twice")));
            }
        }
        Ok(())
    }

    /// Parses `bytes` as `manifest.json`, verifies a signature by `key` (or accepts an unsigned
    /// manifest when `key` is `None`), validates it and checks its expiry against `now`.
    /// Rollback is the caller's check: it alone knows the trusted version.
    pub fn verify(bytes: &[u8], key: Option<&PublicKey>, now: SystemTime, origin: &str) -> Result<Manifest> {
        let envelope = parse_envelope(bytes, origin)?;
        if let Some(key) = key {
            if !signed_by(&envelope, key) {
                let key_id = key.key_id();
                let what = if envelope.signatures.is_empty() {
                    "the manifest is not signed".to_owned()
                } else if envelope.signatures.iter().any(|s| s.keyid == key_id) {
                    format!("the signature by key {key_id} does not verify: the manifest was altered or damaged")
                } else {
                    let ids: Vec<&str> = envelope.signatures.iter().map(|s| s.keyid.as_str()).collect();
                    format!("no signature by the trusted key {key_id} (signed by {})", ids.join(", "))
                };
                return Err(Error::BadSignature { origin: origin.to_owned(), what });
            }
        }
        let manifest = parse_signed(envelope.signed, origin)?;
        if manifest.expires_at()? <= now {
            return Err(Error::Expired {
                origin: origin.to_owned(),
                expires: manifest.expires.clone(),
                manifest_version: manifest.manifest_version,
            });
        }
        Ok(manifest)
    }

    /// Reads a repository's current manifest for rewriting: checks the structure, and the
    /// signature when `key` is given and the manifest is signed. Returns the manifest and whether it
    /// was signed. Expiry is not checked: re-signing an expired repository is how it is revived.
    pub fn load_for_publish(bytes: &[u8], key: Option<&PublicKey>, origin: &str) -> Result<(Manifest, bool)> {
        let envelope = parse_envelope(bytes, origin)?;
        let signed = !envelope.signatures.is_empty();
        if let (Some(key), true) = (key, signed) {
            if !signed_by(&envelope, key) {
                return Err(Error::BadSignature {
                    origin: origin.to_owned(),
                    what: format!(
                        "the current manifest has no valid signature by key {}: it was altered, or signed with another key",
                        key.key_id()
                    ),
                });
            }
        }
        let manifest = parse_signed(envelope.signed, origin)?;
        Ok((manifest, signed))
    }

    /// `manifest.json`'s bytes: this manifest, signed by `key` when given. Pretty-printed for people;
    /// the signature covers the canonical form, not these bytes.
    pub fn to_signed_json(&self, key: Option<&SecretKey>) -> Vec<u8> {
        let signed = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let signatures = key
            .map(|key| {
                let sig = key.sign(&canonical_json(&signed));
                vec![Signature { keyid: key.public().key_id(), sig: BASE64.encode(sig) }]
            })
            .unwrap_or_default();
        let mut bytes = serde_json::to_vec_pretty(&Envelope { signed, signatures }).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// The signed part as a manifest, structurally validated.
fn parse_signed(signed: serde_json::Value, origin: &str) -> Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_value(signed).map_err(|e| Error::metadata(origin, format!("not a release manifest: {e}")))?;
    manifest.validate(origin)?;
    Ok(manifest)
}

/// True when some signature in `envelope` is `key`'s valid signature of the canonical signed part.
fn signed_by(envelope: &Envelope, key: &PublicKey) -> bool {
    let message = canonical_json(&envelope.signed);
    let key_id = key.key_id();
    envelope
        .signatures
        .iter()
        .any(|s| s.keyid == key_id && BASE64.decode(&s.sig).is_ok_and(|sig| key.verify(&message, &sig)))
}

fn parse_envelope(bytes: &[u8], origin: &str) -> Result<Envelope> {
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::metadata(
            origin,
            format!("{} bytes is more than the {MAX_MANIFEST_SIZE}-byte limit", bytes.len()),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::metadata(origin, format!("not a signed manifest: {e}")))
}

fn check_object(object: &ObjectRef, origin: &str, what: &str) -> Result<()> {
    if !is_sha256_hex(&object.sha256) {
        return Err(Error::metadata(
            origin,
            format!("{what}: sha256 {:?} is not 64 lowercase hex digits", object.sha256),
        ));
    }
    check_relative_path(&object.path)
        .map_err(|why| Error::metadata(origin, format!("{what}: path {:?} {why}", object.path)))
}

/// Checks a repository-relative or release path: `/`-separated, no empty, `.` or `..` component, no
/// leading `/`, no NUL or backslash, at most 4096 bytes.
pub fn check_relative_path(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() || path.len() > 4096 {
        return Err("is empty or longer than 4096 bytes");
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("contains NUL or a backslash");
    }
    if path.starts_with('/') {
        return Err("is absolute");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("has an empty, '.' or '..' component");
    }
    Ok(())
}

impl FileTable {
    /// Parses and checks a file table fetched for version `version` (whose bytes already matched the
    /// manifest's hash).
    pub fn parse(bytes: &[u8], version: &str, origin: &str) -> Result<FileTable> {
        let table: FileTable =
            serde_json::from_slice(bytes).map_err(|e| Error::metadata(origin, format!("not a file table: {e}")))?;
        let bad = |what: String| Error::metadata(origin, what);
        if table.kind != FILE_TABLE_TYPE || table.spec_version != SPEC_VERSION {
            return Err(bad(format!(
                "type {:?} spec_version {} is not a supported file table",
                table.kind, table.spec_version
            )));
        }
        if table.version != version {
            return Err(bad(format!("the file table is for version {:?}, not {version:?}", table.version)));
        }
        let is_hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex16(&table.archive_index_hash) {
            return Err(bad("archive_index_hash is not 16 hex digits".into()));
        }
        let mut paths = HashSet::new();
        for entry in &table.entries {
            check_relative_path(&entry.path).map_err(|why| bad(format!("entry path {:?} {why}", entry.path)))?;
            if entry.path == STATE_DIR_NAME || entry.path.starts_with(&format!("{STATE_DIR_NAME}/")) {
                return Err(bad(format!("entry {:?} is inside the updater's state directory", entry.path)));
            }
            if !is_sha256_hex(&entry.sha256) || !is_hex16(&entry.xxh3) || entry.mode > 0o7777 {
                return Err(bad(format!("entry {:?} has a malformed hash or mode", entry.path)));
            }
            if !paths.insert(entry.path.as_str()) {
                return Err(bad(format!("entry {:?} is listed twice", entry.path)));
            }
        }
        Ok(table)
    }

    /// Pretty-printed JSON with a final newline, as published (before zstd compression).
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The repository object: the JSON in one zstd frame (hex hashes and long shared paths shrink
    /// about 4x, and the table is what every folder update fetches).
    pub fn to_object(&self) -> Vec<u8> {
        zstd::bulk::compress(&self.to_json(), 19).unwrap_or_default()
    }

    /// Parses a repository object (see [`FileTable::to_object`]) whose bytes already matched the
    /// manifest's hash, decompressing at most [`MAX_FILE_TABLE_JSON`] bytes.
    pub fn from_object(bytes: &[u8], version: &str, origin: &str) -> Result<FileTable> {
        use std::io::Read;
        let decoder = zstd::stream::read::Decoder::new(bytes)
            .map_err(|e| Error::metadata(origin, format!("not a zstd-compressed file table: {e}")))?;
        let mut json = Vec::new();
        decoder
            .take(MAX_FILE_TABLE_JSON + 1)
            .read_to_end(&mut json)
            .map_err(|e| Error::metadata(origin, format!("not a zstd-compressed file table: {e}")))?;
        if json.len() as u64 > MAX_FILE_TABLE_JSON {
            return Err(Error::metadata(
                origin,
                format!("the file table decompresses to more than {MAX_FILE_TABLE_JSON} bytes"),
            ));
        }
        FileTable::parse(&json, version, origin)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn object(tag: u8) -> ObjectRef {
        let sha = hex::encode([tag; 32]);
        ObjectRef { path: format!("full/{sha}.mf"), size: 10, sha256: sha }
    }

    fn sample(now: SystemTime) -> Manifest {
        let v1 = Version {
            version: "1.0".into(),
            published: format_time(now),
            full: object(1),
            files: object(2),
            patches: vec![],
            blocks: None,
        };
        let v2 = Version {
            version: "1.1".into(),
            published: format_time(now),
            full: object(3),
            files: object(4),
            patches: vec![PatchRef { from: "1.0".into(), object: object(5) }],
            blocks: None,
        };
        Manifest {
            manifest_version: 2,
            expires: format_time(now + Duration::from_secs(3600)),
            versions: vec![v1, v2],
            ..Manifest::empty()
        }
    }

    #[test]
    fn signed_manifests_verify_and_tampering_is_caught() {
        let now = SystemTime::now();
        let key = SecretKey::generate().unwrap();
        let bytes = sample(now).to_signed_json(Some(&key));
        let back = Manifest::verify(&bytes, Some(&key.public()), now, "m").unwrap();
        assert_eq!(back, sample(now));

        // Any change to the signed part breaks the signature, whitespace does not.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replacen("\"size\": 10", "\"size\": 11", 1);
        let err = Manifest::verify(tampered.as_bytes(), Some(&key.public()), now, "m").unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");
        let compact: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let compact = serde_json::to_vec(&compact).unwrap();
        Manifest::verify(&compact, Some(&key.public()), now, "m").unwrap();

        let other = SecretKey::generate().unwrap();
        let err = Manifest::verify(&bytes, Some(&other.public()), now, "m").unwrap_err();
        assert!(err.to_string().contains("no signature by the trusted key"), "{err}");
        let unsigned = sample(now).to_signed_json(None);
        let err = Manifest::verify(&unsigned, Some(&key.public()), now, "m").unwrap_err();
        assert!(err.to_string().contains("not signed"), "{err}");
        Manifest::verify(&unsigned, None, now, "m").unwrap();
    }

    #[test]
    fn expired_manifests_are_refused() {
        let now = SystemTime::now();
        let key = SecretKey::generate().unwrap();
        let bytes = sample(now).to_signed_json(Some(&key));
        let later = now + Duration::from_secs(7200);
        let err = Manifest::verify(&bytes, Some(&key.public()), later, "m").unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
    }

    #[test]
    fn structure_is_checked() {
        let now = SystemTime::now();
        let mut m = sample(now);
        m.versions[1].patches[0].from = "0.9".into();
        assert!(m.validate("m").unwrap_err().to_string().contains("not an earlier version"));
        let mut m = sample(now);
        m.versions[0].full.path = "../etc/passwd".into();
        assert!(m.validate("m").is_err());
        let mut m = sample(now);
        m.versions[0].full.sha256 = "ABC".into();
        assert!(m.validate("m").is_err());
        let mut m = sample(now);
        m.versions[1].version = "1.0".into();
        m.versions[1].patches.clear();
        assert!(m.validate("m").unwrap_err().to_string().contains("twice"));
        let mut m = sample(now);
        m.versions[0].version = "1 0".into();
        assert!(m.validate("m").is_err());
        assert!(Manifest::verify(&vec![b' '; (MAX_MANIFEST_SIZE + 1) as usize], None, now, "m").is_err());
    }

    #[test]
    fn file_tables_refuse_escaping_and_state_paths() {
        let entry = |path: &str| FileEntry {
            path: path.into(),
            size: 1,
            mode: 0o644,
            sha256: hex::encode([0u8; 32]),
            xxh3: "0123456789abcdef".into(),
        };
        let table = |paths: &[&str]| FileTable {
            kind: FILE_TABLE_TYPE.into(),
            spec_version: 1,
            version: "1".into(),
            archive_index_hash: "0123456789abcdef".into(),
            entries: paths.iter().map(|p| entry(p)).collect(),
        };
        FileTable::parse(&table(&["a/b", "c"]).to_json(), "1", "t").unwrap();
        for bad in [&["../x"][..], &["/abs"], &["a//b"], &[".mf-update/journal.json"], &["a", "a"]] {
            assert!(FileTable::parse(&table(bad).to_json(), "1", "t").is_err(), "{bad:?}");
        }
        assert!(FileTable::parse(&table(&["a"]).to_json(), "2", "t").is_err());
    }
}
