//! Where the downloaded fixtures live, and how a missing one is reported.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable that overrides the fixture cache directory.
pub const FIXTURES_ENV: &str = "QUANTLENS_FIXTURES";

/// The fixture cache: `$QUANTLENS_FIXTURES` if set, else `target/fixtures` under the current
/// directory (where `scripts/fetch-fixtures.sh` puts them by default).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os(FIXTURES_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("target").join("fixtures"),
    }
}

/// The path of fixture `relative` in the cache, checked to exist.
pub fn fixture_path(relative: &str) -> Result<PathBuf> {
    let path = fixtures_dir().join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFixture {
            path: path.display().to_string(),
            reason: "not found".into(),
        })
    }
}

/// The whole file as text, gunzipped when its name ends in `.gz`.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let missing = |e: std::io::Error| Error::MissingFixture {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(missing)?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(missing)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .map_err(missing)?;
    }
    Ok(text)
}
