//! Reading the YAML files that come from outside — params files, model.yaml, training
//! configs and state, dataset layouts, bag metadata — and lists of files, with a size limit, so a wrong path
//! (a video, `/dev/zero`) or a hostile file is refused before it is read into memory.
//! Nothing here parses; the callers do, and serde_yaml bounds nesting and alias expansion.

use std::io::Read;
use std::path::Path;

/// Configs, params files, model.yaml (with its provenance): real ones are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// A bag's metadata.yaml, which lists every storage file and topic.
pub const MAX_BAG_METADATA_BYTES: u64 = 64 << 20;
/// A list of files, one per line (`eval --merge-list`): a million paths.
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// The UTF-8 text of `path`, or an `InvalidData` error when it holds more than
/// `max_bytes` (read no further than that) or is not UTF-8.
pub fn read_limited(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max_bytes + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {} MiB this file may have", max_bytes >> 20),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_over_the_limit_are_refused_without_reading_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'a'; (1 << 20) + 1]).unwrap();
        let err = read_limited(&path, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("larger than the 1 MiB"), "{err}");
        assert_eq!(read_limited(&path, 2 << 20).unwrap().len(), (1 << 20) + 1);
        // An endless file stops at the limit.
        let err = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn yaml_alias_bombs_and_deep_nesting_are_errors_not_memory() {
        // "Billion laughs": 9 levels of 9 aliases each would expand to 9^9 strings.
        let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..9 {
            let p = level - 1;
            bomb += &format!("a{level}: &a{level} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
        }
        let err = serde_yaml::from_str::<serde_yaml::Value>(&bomb).unwrap_err();
        assert!(err.to_string().contains("repetition limit"), "{err}");
        let deep = "[".repeat(100_000);
        let err = serde_yaml::from_str::<serde_yaml::Value>(&deep).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}
