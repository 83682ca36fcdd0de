//! Command-line options shared by the reproduction examples: `--quick`, `--out DIR`, and any
//! flags of the example's own.

use std::path::PathBuf;

/// What every reproduction example accepts.
pub struct Options {
    /// The short run CI makes.
    pub quick: bool,
    /// Where the tables are written.
    pub out: PathBuf,
}

/// Parses `--quick` and `--out DIR` (default `default_out`); any other flag goes to `extra`
/// with a reader for its value, which returns `false` for a flag it does not know. `usage`
/// lists the example's own flags for the error message.
pub fn parse(
    default_out: &str,
    usage: &str,
    mut extra: impl FnMut(&str, &mut dyn FnMut() -> anyhow::Result<String>) -> anyhow::Result<bool>,
) -> anyhow::Result<Options> {
    let mut o = Options {
        quick: false,
        out: PathBuf::from(default_out),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--out" => o.out = PathBuf::from(value()?),
            other => {
                if !extra(other, &mut value)? {
                    anyhow::bail!("unknown option {other}; expected --quick, --out DIR{usage}")
                }
            }
        }
    }
    Ok(o)
}
