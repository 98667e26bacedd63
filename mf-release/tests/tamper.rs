//! A signed manifest survives no change: every flipped byte is refused (or is insignificant
//! whitespace), and no input makes verification panic.

use std::time::{Duration, SystemTime};

use mf_release::manifest::{format_time, Manifest, ObjectRef, PatchRef, Version};
use mf_release::{FileTable, SecretKey};
use proptest::prelude::*;

fn object(tag: u8) -> ObjectRef {
    let sha = hex::encode([tag; 32]);
    ObjectRef { path: format!("full/{sha}.mf"), size: 1000 + u64::from(tag), sha256: sha }
}

fn signed(key: &SecretKey) -> (Manifest, Vec<u8>) {
    let now = SystemTime::now();
    let version = |name: &str, tag: u8, patches: Vec<PatchRef>| Version {
        version: name.into(),
        published: format_time(now),
        full: object(tag),
        files: object(tag + 1),
        patches,
        blocks: None,
    };
    let manifest = Manifest {
        manifest_version: 7,
        expires: format_time(now + Duration::from_secs(86400)),
        versions: vec![
            version("1.0", 1, vec![]),
            version("1.1", 3, vec![PatchRef { from: "1.0".into(), object: object(5) }]),
        ],
        ..Manifest::empty()
    };
    let bytes = manifest.to_signed_json(Some(key));
    (manifest, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_changed_byte_is_refused_or_harmless(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let key = SecretKey::generate().unwrap();
        let (manifest, mut bytes) = signed(&key);
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(verified) = Manifest::verify(&bytes, Some(&key.public()), SystemTime::now(), "m") {
            // Only changes outside the signed content (whitespace, the signature list's layout) may pass.
            prop_assert_eq!(verified, manifest);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let key = SecretKey::generate().unwrap();
        let _ = Manifest::verify(&bytes, Some(&key.public()), SystemTime::now(), "m");
        let _ = Manifest::verify(&bytes, None, SystemTime::now(), "m");
        let _ = FileTable::parse(&bytes, "1.0", "t");
        let _ = FileTable::from_object(&bytes, "1.0", "t");
    }
}
