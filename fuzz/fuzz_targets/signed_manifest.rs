//! Fuzzes the signed-manifest reader (`Manifest::verify`, `Manifest::load_for_publish`). Two modes,
//! chosen by the first byte's low bit:
//! - raw: the rest is a whole `manifest.json` (envelope, signatures, signed part), checked with and
//!   without a trusted key;
//! - signed: the rest is the JSON of the signed part, which the target signs with its fixed key, so
//!   structural validation and expiry run behind a valid signature instead of stopping at it.
//!
//! Besides "no panic, no abort, no huge allocation" it asserts that the readers agree: what a client
//! accepts the publisher reads identically, and a manifest that validates survives being signed,
//! written and verified again unchanged.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mf_release::manifest::{canonical_json, Envelope, Signature};
use mf_release::{Error, Manifest, PublicKey, SecretKey};

/// A fixed key, so that runs are reproducible (the fuzzer never sees the secret half anyway).
fn key() -> &'static (SecretKey, PublicKey) {
    static KEY: OnceLock<(SecretKey, PublicKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let text = format!("mf-ed25519-secret:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        let secret = SecretKey::parse(&text, "fuzz").expect("fixed key parses");
        let public = secret.public();
        (secret, public)
    })
}

/// 2001-09-09: before the seeds' expiry dates, after the Unix epoch.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        check(rest);
    } else if let Ok(signed) = serde_json::from_slice::<serde_json::Value>(rest) {
        let (secret, public) = key();
        let sig = base64::engine::general_purpose::STANDARD.encode(secret.sign(&canonical_json(&signed)));
        let envelope = Envelope { signed, signatures: vec![Signature { keyid: public.key_id(), sig }] };
        if let Ok(bytes) = serde_json::to_vec(&envelope) {
            check(&bytes);
        }
    }
});

fn check(bytes: &[u8]) {
    let (secret, public) = key();
    let unsigned = Manifest::verify(bytes, None, now(), "fuzz");
    let trusted = Manifest::verify(bytes, Some(public), now(), "fuzz");
    let published = Manifest::load_for_publish(bytes, None, "fuzz");
    let _ = Manifest::load_for_publish(bytes, Some(public), "fuzz");

    if let Ok(manifest) = &trusted {
        assert_eq!(unsigned.as_ref().ok(), Some(manifest), "a key can only narrow what verifies");
    }
    if let Ok(manifest) = &unsigned {
        let (read, _) = published.as_ref().expect("what a client accepts, the publisher reads");
        assert_eq!(read, manifest);
    }
    // Round trip: whatever the publisher reads, it can sign and a client verifies it unchanged
    // (unless it expired, which publishing does not check).
    if let Ok((manifest, _)) = &published {
        let rewritten = manifest.to_signed_json(Some(secret));
        match Manifest::verify(&rewritten, Some(public), now(), "fuzz") {
            Ok(again) => assert_eq!(&again, manifest, "signing and verifying changed the manifest"),
            Err(Error::Expired { .. }) => {}
            Err(e) => panic!("a manifest the publisher read does not verify after signing: {e}"),
        }
    }
}
