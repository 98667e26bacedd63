//! Opens arbitrary bytes as a Panda3D multifile and, when that succeeds, lists it and reads every
//! subfile every way mf-panda3d offers, directly and through the format-agnostic `AnyArchive` view
//! that extraction and mounting use. Besides "no panic, no huge allocation", it checks that the ways
//! agree: a successful `read` implies `verify_subfile`, the streaming reader and every `read_at` slice
//! give the same bytes, and both views list the same entries.
//!
//! Panda3D records no checksums, so mutations reach the index chain and the decoders directly. Each
//! input is read without a password and with the seeds' password (`secret`), so encrypted records go
//! through decryption too.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use mf_panda3d::{AnyArchive, Multifile};

/// Subfiles decoding to more than this are only probed with `read_at`: zlib legitimately expands a
/// few KiB ~1000-fold, which would only slow the fuzzer down.
const FULL_READ_LIMIT: u64 = 16 << 20;

/// The password of the encrypted seed (`corpus/panda3d/encrypted-secret.mf`).
const PASSWORD: &str = "secret";

fuzz_target!(|data: &[u8]| {
    let Ok(mut multifile) = Multifile::from_bytes(data.to_vec(), "fuzz.mf") else {
        return;
    };
    exercise(&multifile);
    if multifile.subfiles().iter().any(|s| s.is_encrypted()) {
        multifile.set_password(Some(PASSWORD.into()));
        exercise(&multifile);
    }
    exercise_any(data);
    exercise_pread(data, &multifile);
});

/// The same bytes opened from a file with `pread` (what a mount does): the same subfiles, the same
/// stored bytes and the same content as the in-memory view.
fn exercise_pread(data: &[u8], in_memory: &Multifile) {
    thread_local! {
        static FILE: tempfile::NamedTempFile = tempfile::NamedTempFile::new().expect("a scratch file");
    }
    FILE.with(|file| {
        std::fs::write(file.path(), data).expect("scratch file written");
        let mut pread = Multifile::open_pread(file.path()).expect("what opens in memory opens from the file");
        pread.set_password(in_memory.has_password().then(|| PASSWORD.into()));
        assert_eq!(pread.subfiles(), in_memory.subfiles());
        assert_eq!(pread.header_prefix(), in_memory.header_prefix());
        assert_eq!(pread.signatures().len(), in_memory.signatures().len());
        let small = in_memory.total_size() <= FULL_READ_LIMIT;
        for subfile in in_memory.subfiles() {
            assert!(pread.raw_bytes(subfile).is_none(), "nothing is mapped");
            assert_eq!(pread.stored_bytes(subfile).ok(), in_memory.stored_bytes(subfile).ok());
            if small {
                assert_eq!(pread.read(subfile).ok(), in_memory.read(subfile).ok());
            }
            let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
            let offset = subfile.size() / 2;
            let (got, want) = (pread.read_at(subfile, offset, &mut a).ok(), in_memory.read_at(subfile, offset, &mut b).ok());
            assert_eq!(got, want);
            if let Some(n) = got {
                assert_eq!(a[..n], b[..n]);
            }
        }
    });
}

fn exercise(multifile: &Multifile) {
    let _ = multifile.check_paths();
    let _ = (multifile.version(), multifile.header_prefix(), multifile.signatures().len());
    // The chain may jump backwards, so its terminator can lie before its start (index_size saturates).
    let _ = (multifile.index_start(), multifile.index_end());
    let names: Vec<&str> = multifile.subfiles().iter().map(|s| s.name()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "subfiles are listed in strict name order");
    let small = multifile.total_size() <= FULL_READ_LIMIT;
    for (position, subfile) in multifile.subfiles().iter().enumerate() {
        assert!(mf_format::validate_path(subfile.name()).is_ok(), "listed names are valid paths");
        assert_eq!(multifile.get(subfile.name()), Some(subfile), "every subfile is found by its name");
        assert_eq!(multifile.lower_bound(subfile.name()), position);
        assert_eq!(multifile.subfile(position), Some(subfile));
        let _ = multifile.mtime(subfile);
        let stored = multifile.stored_bytes(subfile).expect("stored bytes lie within the file, checked at open");
        if let Some(raw) = multifile.raw_bytes(subfile) {
            assert_eq!(raw, &stored[..]);
        }
        let size = subfile.size();

        let whole = if small { multifile.read(subfile).ok() } else { None };
        if let Some(whole) = &whole {
            assert_eq!(whole.len() as u64, size, "read returns the recorded length");
            assert!(multifile.verify_subfile(subfile).is_ok(), "read succeeded, so verify must");
            if let Some(raw) = multifile.raw_bytes(subfile) {
                assert_eq!(raw, &whole[..]);
            }
        }
        if small {
            let mut streamed = Vec::new();
            let streamed_ok = multifile.reader(subfile).is_ok_and(|mut r| r.read_to_end(&mut streamed).is_ok());
            if let Some(whole) = &whole {
                assert!(streamed_ok, "read succeeded, so the streaming reader must");
                assert_eq!(&streamed, whole);
            } else {
                assert!(!streamed_ok, "the streaming reader accepted what read refused");
            }
        }
        for offset in [0, 1, size / 2, size.saturating_sub(1), size, size + 1] {
            let mut buf = [0u8; 4096];
            match multifile.read_at(subfile, offset, &mut buf) {
                Ok(n) => {
                    assert_eq!(n as u64, (size - offset).min(buf.len() as u64));
                    if let Some(whole) = &whole {
                        assert_eq!(&buf[..n], &whole[offset as usize..offset as usize + n]);
                    }
                }
                Err(_) => assert!(offset > size || whole.is_none(), "read_at failed where read succeeded"),
            }
        }
    }
    let errors = multifile.verify();
    assert!(errors.len() <= multifile.len());
}

/// The same bytes through `AnyArchive`, which detects the format: it must list what `Multifile` does.
fn exercise_any(data: &[u8]) {
    let Ok(archive) = AnyArchive::from_bytes(data.to_vec(), "fuzz.mf") else {
        return;
    };
    let Some(multifile) = archive.as_panda3d() else {
        return;
    };
    let paths: Vec<&str> = archive.entries_by_path().map(|e| e.path()).collect();
    let names: Vec<&str> = multifile.subfiles().iter().map(|s| s.name()).collect();
    assert_eq!(paths, names);
    let _ = archive.index_size();
    let small = archive.total_size() <= FULL_READ_LIMIT;
    for entry in archive.entries_by_path() {
        let _ = (archive.layout(&entry), entry.mtime(), entry.compression());
        assert!(archive.decode_frame(&entry, 0, &mut Vec::new()).is_err(), "Panda3D entries have no frames");
        if small {
            if let Ok(whole) = archive.read(&entry) {
                assert_eq!(whole.len() as u64, entry.size());
                let mut streamed = Vec::new();
                let mut reader = archive.reader(&entry).expect("read succeeded, so the reader opens");
                reader.read_to_end(&mut streamed).expect("read succeeded, so the reader reads");
                assert_eq!(&streamed[..], &whole[..]);
            }
        }
    }
}
