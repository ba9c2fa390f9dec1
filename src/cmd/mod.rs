//! One module per subcommand; each `run` returns the process exit code.

pub mod bag;
pub mod bench;
pub mod doctor;
pub mod eval;
pub mod infer;
pub mod interrupt;
pub mod model;
pub mod progress;
pub mod staged;
pub mod synth;
pub mod train;

use std::path::{Path, PathBuf};

use bayes_perception::config::{Mode, Params};
use bayes_perception::model::{ArchConfig, PRESETS};

use crate::cli::{Overrides, RunArgs};

/// A command-line value a command refuses before running anything (`--every 0`): exit
/// code 2, like the values clap itself refuses. Made with [`usage!`].
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A command stopped by Ctrl-C, SIGTERM or SIGHUP before it had anything to keep: exit
/// code 130 ([`interrupt::EXIT_INTERRUPTED`]), `status` "interrupted" in a `--json` error
/// report.
#[derive(Debug)]
pub struct Interrupted(pub &'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Returns a [`Usage`] error from the function: `usage!("--every must be at least 1")`.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::cmd::Usage(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// This process's command line, as written into reports, model files and bags: each
/// argument quoted for a POSIX shell where it needs it (a path with a space), and one that
/// is not UTF-8 (a file name on Linux can be any bytes) with the replacement character,
/// where `std::env::args` would panic.
pub fn command_line(skip: usize) -> Vec<String> {
    std::env::args_os()
        .skip(skip)
        .map(|a| shell_quoted(&a.to_string_lossy()))
        .collect()
}

/// `arg` as a POSIX shell reads it back: as it is when it has only characters no shell
/// treats specially, else in single quotes.
pub fn shell_quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c));
    match plain {
        true => arg.to_owned(),
        false => format!("'{}'", arg.replace('\'', r"'\''")),
    }
}

/// With `--json`, a command that stopped with `err` (not a wrong command line, exit 2)
/// still leaves a report at `path`:
/// `status` "error" ("retry" where the exit code is 75: a full disk, say), `exit_code`,
/// `error` (the message) and the command's own `fields`. The error itself is what the
/// caller reports: a report that cannot be written adds nothing to it.
pub fn write_error_report(
    path: &Path,
    mut fields: serde_json::Map<String, serde_json::Value>,
    err: &anyhow::Error,
) {
    let code = crate::exit_code(err);
    if code == crate::EXIT_USAGE {
        // A wrong command line runs nothing and writes nothing (README: exit codes).
        return;
    }
    let status = match code {
        crate::EXIT_TRANSIENT => "retry",
        interrupt::EXIT_INTERRUPTED => "interrupted",
        _ => "error",
    };
    fields.insert("status".into(), status.into());
    fields.insert("exit_code".into(), code.into());
    fields.insert(
        "error".into(),
        bayes_perception::error::one_line(&**err).into(),
    );
    if let Ok(text) = serde_json::to_string_pretty(&serde_json::Value::Object(fields)) {
        bayes_perception::output::write_file(path, text.as_bytes()).ok();
    }
}

/// Refuses a `--json` report path that cannot be written before a long run rather than
/// after it. An existing file is opened for writing (not created, not truncated); for a new
/// one a probe file of a name of its own is created beside it and removed, so the report
/// path itself is never touched before the report. A parent directory the command creates
/// itself (`creates`: eval's `--out`, bag process's OUTPUT) is accepted as it is; paths
/// that are not regular files (a FIFO, /dev/stdout) are not probed.
pub fn check_report_path(path: &Path, creates: Option<&Path>) -> anyhow::Result<()> {
    let cannot = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!("--json {}: cannot be written", path.display()))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(cannot)?;
            return Ok(());
        }
        Ok(_) => return Ok(()),
        // A dangling symlink: the report will create what it points to.
        Err(_) if std::fs::symlink_metadata(path).is_ok() => return Ok(()),
        Err(_) => {}
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if creates.is_some_and(|c| c == parent) && !parent.exists() {
        return Ok(());
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    can_create_in(parent, &name).map_err(cannot)
}

/// Whether a file can be created in `dir` (a probe named after `what`, this host and
/// process is made and removed; a failure to remove it is no failure to write):
/// permissions, a read-only mount.
pub(crate) fn can_create_in(dir: &Path, what: &str) -> std::io::Result<()> {
    let probe = dir.join(format!(
        ".{what}.check-{}-{}",
        bayes_perception::process::host_name(),
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// Reads the params file's entries for `node` (or the defaults) and applies command-line
/// overrides.
pub fn load_params(
    config: Option<&Path>,
    node: &str,
    overrides: &Overrides,
) -> anyhow::Result<Params> {
    let mut params = match config {
        Some(path) => Params::load(path, node)?,
        None => Params::default(),
    };
    if let Some(mode) = overrides.mode {
        params.mode = mode;
    }
    if let Some(device) = &overrides.device {
        params.device = device.clone();
    }
    if let Some(precision) = overrides.precision {
        params.precision = precision;
    }
    if let Some(channels_last) = overrides.channels_last {
        params.channels_last = channels_last;
    }
    if let Some(samples) = overrides.samples {
        params.mc.samples = samples;
    }
    if let Some(head_samples) = overrides.head_samples {
        params.moments.head_samples = head_samples;
    }
    if let Some(rules) = overrides.rules {
        params.moments.rules = rules;
    }
    if let Some(batch_size) = overrides.batch_size {
        params.mc.batch_size = batch_size;
    }
    if let Some(seed) = overrides.seed {
        params.seed = seed;
    }
    params.validate(crate::COMMAND_LINE)?;
    Ok(params)
}

/// Engine overrides the run's mode does not read (`--samples` in aleatoric mode), for a
/// warning: said, not refused, as a script may pass one set of flags for every mode.
pub fn unused_overrides(overrides: &Overrides, mode: Mode) -> Vec<&'static str> {
    let mc = [
        ("--samples", overrides.samples.is_some()),
        ("--batch-size", overrides.batch_size.is_some()),
    ];
    let moments = [
        ("--head-samples", overrides.head_samples.is_some()),
        ("--rules", overrides.rules.is_some()),
    ];
    let unread: Vec<(&str, bool)> = match mode {
        Mode::Aleatoric => mc.into_iter().chain(moments).collect(),
        Mode::Mc => moments.into(),
        Mode::Moments => mc.into(),
    };
    unread
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| flag)
        .collect()
}

/// Warns of [`unused_overrides`].
pub fn warn_unused_overrides(overrides: &Overrides, mode: Mode) {
    warn_of_unused(&unused_overrides(overrides, mode), mode);
}

/// Warns that the `unused` flags are not read in `mode`.
pub fn warn_of_unused(unused: &[&str], mode: Mode) {
    if !unused.is_empty() {
        log::warn!(
            "{} ignored: mode {mode} does not read {}",
            unused.join(", "),
            if unused.len() == 1 { "it" } else { "them" }
        );
    }
}

/// The parameters (file and overrides) and the model directory of a run.
pub fn params_and_model(run: &RunArgs) -> anyhow::Result<(Params, PathBuf)> {
    let params = load_params(run.config.as_deref(), &run.node, &run.overrides)?;
    let dir = model_dir(run.model.as_deref(), &params)?;
    Ok((params, dir))
}

/// The model directory: `--model`, else the params file's `model`.
pub fn model_dir(arg: Option<&Path>, params: &Params) -> anyhow::Result<PathBuf> {
    match (arg, params.model.as_str()) {
        (Some(dir), _) => Ok(dir.to_owned()),
        (None, "") => anyhow::bail!("no model: pass --model DIR or set `model` in the params file"),
        (None, dir) => Ok(PathBuf::from(dir)),
    }
}

/// The network preset named by `--arch`.
pub fn preset(name: &str) -> anyhow::Result<ArchConfig> {
    match ArchConfig::preset(name) {
        Some(arch) => Ok(arch),
        None => usage!(
            "unknown --arch `{name}`; expected one of {}",
            PRESETS.join(", ")
        ),
    }
}

/// What a frame of the engine's mode takes, for summaries: `1 pass`, `7 passes in batches
/// of 4`, `1 pass of moments, 20 head samples`.
pub(crate) fn samples_label(engine: &bayes_perception::Engine) -> String {
    match engine.config().mode {
        bayes_perception::config::Mode::Aleatoric => "1 pass".into(),
        bayes_perception::config::Mode::Moments => format!(
            "1 pass of moments, {} head samples",
            engine.config().moments_head_samples
        ),
        bayes_perception::config::Mode::Mc if engine.mc_batch_size_known() => format!(
            "{} passes in batches of {}",
            engine.config().mc_samples,
            engine.mc_batch_size()
        ),
        bayes_perception::config::Mode::Mc => format!(
            "{} passes in batches of up to {} (sized to the GPU's free memory on the first \
             frame)",
            engine.config().mc_samples,
            engine.mc_batch_size()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_where_a_shell_would_read_them_otherwise() {
        assert_eq!(shell_quoted("--max-bag-size"), "--max-bag-size");
        assert_eq!(shell_quoted("/data/run_1/out.mcap"), "/data/run_1/out.mcap");
        assert_eq!(shell_quoted("my drive"), "'my drive'");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(shell_quoted(""), "''");
        assert_eq!(shell_quoted("a*b"), "'a*b'");
    }

    /// The report path is checked without being touched: no file appears or empties, a
    /// missing directory is refused unless the command creates it, a FIFO is not opened.
    #[test]
    fn overrides_a_mode_does_not_read_are_named() {
        let given = Overrides {
            samples: Some(4),
            head_samples: Some(3),
            rules: Some(bayes_perception::moments::Rules::Linearized),
            ..Overrides::default()
        };
        assert_eq!(
            unused_overrides(&given, Mode::Aleatoric),
            ["--samples", "--head-samples", "--rules"]
        );
        assert_eq!(
            unused_overrides(&given, Mode::Mc),
            ["--head-samples", "--rules"]
        );
        assert_eq!(unused_overrides(&given, Mode::Moments), ["--samples"]);
        assert!(unused_overrides(&Overrides::default(), Mode::Aleatoric).is_empty());
    }

    #[test]
    fn report_paths_are_checked_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let entries = || std::fs::read_dir(dir.path()).unwrap().count();
        let new = dir.path().join("report.json");
        check_report_path(&new, None).unwrap();
        assert!(!new.exists());
        assert_eq!(entries(), 0, "the probe is removed");
        std::fs::write(&new, "earlier").unwrap();
        check_report_path(&new, None).unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "earlier");
        let out = dir.path().join("out");
        let inside = out.join("report.json");
        let message = check_report_path(&inside, None).unwrap_err().to_string();
        assert_eq!(
            message,
            format!("--json {}: cannot be written", inside.display())
        );
        check_report_path(&inside, Some(&out)).unwrap();
        assert!(!out.exists());
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        check_report_path(&fifo, None).unwrap();
    }
}
