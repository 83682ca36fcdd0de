//! Shared by the integration tests that read fixtures.

use std::sync::OnceLock;

/// Make sure the fixture cache is filled: run `scripts/fetch-fixtures.sh` once per test binary
/// (it is idempotent and verifies SHA-256), and fail loudly — naming the script — when it
/// cannot, instead of skipping.
pub fn ensure_fixtures() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = DONE.get_or_init(|| {
        let status = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/fetch-fixtures.sh"
            ))
            .status()
            .map_err(|e| format!("could not start scripts/fetch-fixtures.sh: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/fetch-fixtures.sh failed ({status}); run it by hand to see why"
            ))
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
