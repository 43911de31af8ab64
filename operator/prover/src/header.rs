//! The common prefix of proofmesh's binary files (proofs and witnesses): 4 magic bytes, then a
//! version byte. Both formats check it the same way, so the messages read the same.

/// Check that `bytes` holds at least `header_len` bytes starting with `magic` and `version`.
/// The error says what was found and what was expected.
pub(crate) fn check(
    bytes: &[u8],
    magic: &[u8; 4],
    version: u8,
    header_len: usize,
) -> Result<(), String> {
    if bytes.len() < header_len {
        return Err(format!(
            "{} bytes is shorter than the {header_len}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..4] != magic {
        return Err(format!(
            "bad magic {:02x?}, expected {:?}",
            &bytes[..4],
            String::from_utf8_lossy(magic)
        ));
    }
    if bytes[4] != version {
        return Err(format!(
            "unsupported format version {}, expected {version}",
            bytes[4]
        ));
    }
    Ok(())
}
