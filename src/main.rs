//! The `bayes_perception` binary: parse the command line, dispatch, print one readable
//! line on error and return an exit code.

mod cli;
mod cmd;

use std::process::ExitCode;

use bayes_perception::error::one_line;
use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`bayes_perception doctor | head`) like other Unix
    // tools, instead of panicking inside println!.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid handler.
    // A file-size limit (`ulimit -f`) then fails the write with EFBIG, reported like a
    // full disk, instead of killing the process with SIGXFSZ mid-file.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if let Err((code, why)) = die_with_parent() {
        eprintln!("error: {why}");
        if code == EXIT_TRANSIENT {
            eprintln!("{TRANSIENT_NOTE}");
        }
        return ExitCode::from(code);
    }
    bayes_perception::configure_allocations();
    let _fail_points = bayes_perception::fail_points_from_env();
    let cli = cli::Cli::parse();
    cmd::interrupt::install();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        cli::Command::Infer(args) => cmd::infer::run(args),
        cli::Command::Bench(args) => cmd::bench::run(args),
        cli::Command::Doctor => cmd::doctor::run(),
        cli::Command::Bag(cli::BagCommand::Process(args)) => cmd::bag::process(*args),
        cli::Command::Bag(cli::BagCommand::Info(args)) => cmd::bag::info(args),
        cli::Command::Bag(cli::BagCommand::Sample(args)) => cmd::bag::sample(args),
        cli::Command::Model(cli::ModelCommand::Init(args)) => cmd::model::init(args),
        cli::Command::Model(cli::ModelCommand::Check(args)) => cmd::model::check(args),
        cli::Command::Synth(args) => cmd::synth::run(args),
        cli::Command::Train(args) => cmd::train::run(args),
        cli::Command::Eval(args) => cmd::eval::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&*err));
            let code = exit_code(&err);
            if code == EXIT_TRANSIENT {
                eprintln!("{TRANSIENT_NOTE}");
            }
            ExitCode::from(code)
        }
    }
}

/// The variable a supervisor sets to its own process id for this process to die with it
/// (scripts/fleet.py: a Ray worker that is killed leaves no binary writing where its
/// retry will).
const PARENT_PID: &str = "BAYES_PERCEPTION_PARENT_PID";

/// With [`PARENT_PID`] set: this process gets SIGKILL when its parent dies (Linux's
/// `PR_SET_PDEATHSIG`), and stops at once (exit code 75) when the supervisor it names is
/// no longer among its ancestors: gone already, killed between starting it and here.
/// Between the two, a wrapper script that does not `exec` the binary is its parent: the
/// binary then dies with the wrapper, which is the wrapper's to pass on. Set here rather
/// than in a pre-exec hook of the supervisor's, which Python runs between fork and exec,
/// unsafe in a process with threads (a Ray worker has many). A value that is no process
/// id is a usage error.
fn die_with_parent() -> Result<(), (u8, String)> {
    let Some(value) = std::env::var_os(PARENT_PID) else {
        return Ok(());
    };
    let supervisor: libc::pid_t = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|&pid| pid > 0)
        .ok_or_else(|| {
            let value = value.to_string_lossy();
            (
                EXIT_USAGE,
                format!("{PARENT_PID}={value} is not a process id"),
            )
        })?;
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        let why = std::io::Error::last_os_error();
        return Err((
            1,
            format!("cannot tie this process to its parent ({PARENT_PID}): {why}"),
        ));
    }
    // Looked for after the signal is set, so a parent that dies from now on is not missed.
    let ancestors = ancestors();
    if !ancestors.contains(&supervisor) {
        return Err((
            EXIT_TRANSIENT,
            format!(
                "the process that started this one ({PARENT_PID}={supervisor}) is gone \
                 (ancestors now {ancestors:?})"
            ),
        ));
    }
    Ok(())
}

/// This process's parent, its parent's, .. up to the first process (as /proc gives them;
/// at most 64).
fn ancestors() -> Vec<libc::pid_t> {
    // SAFETY: getppid cannot fail.
    let mut pid = unsafe { libc::getppid() };
    let mut chain = Vec::new();
    while pid > 0 && chain.len() < 64 {
        chain.push(pid);
        // The parent is the second field after the command name, which is in parentheses
        // and may hold anything.
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(')')?.1.to_owned();
                after_name.split_whitespace().nth(1)?.parse().ok()
            });
        match parent {
            Some(parent) if parent != pid => pid = parent,
            _ => break,
        }
    }
    chain
}

/// The exit code of a command that stopped with `err`: 2 for a command-line value the
/// command refused before running ([`cmd::Usage`], or an override that is no valid
/// parameter), 130 for [`cmd::Interrupted`], [`EXIT_TRANSIENT`] where another try may
/// succeed, else 1.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<cmd::Interrupted>()) {
        return cmd::interrupt::EXIT_INTERRUPTED;
    }
    let usage = err.chain().any(|e| {
        e.is::<cmd::Usage>()
            || matches!(
                e.downcast_ref::<bayes_perception::Error>(),
                Some(bayes_perception::Error::Config { origin, .. })
                    if origin == COMMAND_LINE || origin.starts_with("--")
            )
    });
    if usage {
        EXIT_USAGE
    } else if is_transient(err) {
        EXIT_TRANSIENT
    } else {
        1
    }
}

/// Exit code of a wrong command line, as clap exits.
pub const EXIT_USAGE: u8 = 2;

/// The origin config errors of command-line overrides carry (or the flag's name, `--...`).
pub(crate) const COMMAND_LINE: &str = "command line";

/// What a failure worth retrying ([`EXIT_TRANSIENT`]) adds to its error line.
const TRANSIENT_NOTE: &str = "(a temporary failure: another try may succeed; exit code 75)";

/// Exit code of a failure worth retrying (EX_TEMPFAIL): out of memory during inference,
/// an output that could not be written for lack of space. Every other failure exits 1.
pub const EXIT_TRANSIENT: u8 = 75;

/// Whether anything in the error's chain is a failure that another try may not meet.
pub(crate) fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<bayes_perception::Error>()
            .is_some_and(bayes_perception::Error::is_transient)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(bayes_perception::error::is_transient_io)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reads_as_one_line_without_repeating_its_source() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let err = anyhow::Error::new(bayes_perception::Error::Io {
            path: "out/out_0.mcap".into(),
            source: io,
        })
        .context("writing the output bag failed");
        let line = one_line(&*err);
        assert_eq!(
            line,
            format!(
                "writing the output bag failed: out/out_0.mcap: {}",
                std::io::Error::from(std::io::ErrorKind::StorageFull)
            )
        );
        assert!(is_transient(&err));
        // Causes that say something new are kept.
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&*err), "outer: inner");
    }
}
