//! The library's error type. Every variant carries the context a user needs to fix the
//! problem (the file, the key, the tensor); the binary prints it as one line.

use std::path::PathBuf;

/// Errors from loading models and configs, choosing devices, and running the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A params file or a parameter value that is not acceptable.
    #[error("{origin}: `{key}`: {message}")]
    Config {
        /// The file (or "command line") the value came from.
        origin: String,
        /// The dotted parameter name, e.g. `mc.samples`.
        key: String,
        message: String,
    },
    /// A model directory that cannot be used.
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("device: {0}")]
    Device(String),
    #[error("image {path}: {message}")]
    Image { path: PathBuf, message: String },
    /// A dataset whose layout is wrong: a missing or unpaired file, an empty folder.
    #[error("{path}: {message}")]
    Dataset { path: PathBuf, message: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// libtorch failed during a prediction (e.g. out of memory: lower `mc.batch_size`).
    #[error("inference failed: {0}")]
    Inference(String),
    /// Training cannot go on (its loss keeps coming out NaN or infinite).
    #[error("training stopped: {0}")]
    Training(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// serde's Rust type names in a message as a params file's reader knows them
/// (`expected usize` -> `expected a whole number >= 0`).
fn plain_types(message: &str) -> String {
    const NAMES: [(&str, &str); 11] = [
        ("usize", "a whole number >= 0"),
        ("u64", "a whole number >= 0"),
        ("u32", "a whole number >= 0"),
        ("u16", "a whole number >= 0"),
        ("u8", "a whole number from 0 to 255"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("a boolean", "true or false"),
        ("a string", "text"),
    ];
    let mut out = message.to_owned();
    for (rust, plain) in NAMES {
        out = out.replace(&format!("expected {rust}"), &format!("expected {plain}"));
    }
    out
}

impl Error {
    /// Whether the failure may go away on another try (on a machine with more free memory,
    /// or once the disk has room): out of memory during inference, an output that could
    /// not be written for lack of space. Damaged input, bad settings or models are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Inference(message) => crate::engine::is_out_of_memory(message),
            Error::Io { source, .. } => is_transient_io(source),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A YAML file or tree that does not fit its type, named by the key where it failed.
    /// serde_yaml starts its message with that key when it parses text; said once here.
    pub(crate) fn deserialize(
        origin: impl Into<String>,
        e: serde_path_to_error::Error<serde_yaml::Error>,
    ) -> Self {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        let message = message
            .strip_prefix(&format!("{key}: "))
            .unwrap_or(&message);
        Error::config(origin, key, plain_types(message))
    }

    pub(crate) fn config(
        origin: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            origin: origin.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// An error and its causes on one line, each cause after a colon; a cause whose text
/// already ends the line is left out (errors that show their source in their own message,
/// `path: No space left on device`, also name it as their source). For messages to users:
/// the CLI's and the node's last words, `infer`'s skipped files.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let causes = std::iter::successors(Some(err), |e| e.source());
    for cause in causes.map(|cause| cause.to_string()) {
        if line.ends_with(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// I/O failures that another try may not meet: no space, quota, too many open files,
/// interrupted or timed out.
pub fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        StorageFull | QuotaExceeded | FileTooLarge | Interrupted | TimedOut | WouldBlock
    ) || e.raw_os_error() == Some(libc::EMFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_kind_of_value_not_the_rust_type() {
        assert_eq!(
            plain_types("invalid type: string \"two\", expected usize"),
            "invalid type: string \"two\", expected a whole number >= 0"
        );
        assert_eq!(
            plain_types("invalid value: integer `-1`, expected u32"),
            "invalid value: integer `-1`, expected a whole number >= 0"
        );
        assert_eq!(plain_types("expected f64"), "expected a number");
        assert_eq!(plain_types("unknown field `x`"), "unknown field `x`");
    }
}
