//! One module per subcommand; each `run` returns the process exit code.

pub mod bench;
pub mod doctor;
pub mod infer;
