//! Fuzzes the file-table reader (`FileTable::parse` and `FileTable::from_object`). The first byte
//! chooses how the rest is read:
//! - 0: as the table's JSON;
//! - 1: as a repository object (zstd-compressed JSON), exercising the decompression bound;
//! - 2: as JSON that the target compresses first, so the object path reaches the JSON checks too.
//!
//! Tables are parsed for version "1.0" (the seeds' version). Besides "no panic, no abort, no huge
//! allocation" it asserts that an accepted table survives both encodings unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mf_release::FileTable;

const VERSION: &str = "1.0";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let table = match mode % 3 {
        0 => FileTable::parse(rest, VERSION, "fuzz"),
        1 => FileTable::from_object(rest, VERSION, "fuzz"),
        _ => match zstd::bulk::compress(rest, 1) {
            Ok(object) => FileTable::from_object(&object, VERSION, "fuzz"),
            Err(_) => return,
        },
    };
    let Ok(table) = table else { return };
    let from_json = FileTable::parse(&table.to_json(), VERSION, "fuzz").expect("a written table parses");
    assert_eq!(from_json, table, "the JSON round trip changed the table");
    let from_object = FileTable::from_object(&table.to_object(), VERSION, "fuzz").expect("a written object parses");
    assert_eq!(from_object, table, "the object round trip changed the table");
});
