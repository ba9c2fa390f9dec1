//! An output directory built under a temporary name next to where it goes, and moved into
//! place only once complete: a failed or killed run never leaves a partial output that
//! looks finished, and a replaced output never mixes old files with new ones.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// `.NAME.partial-PID` next to the output `NAME`; removed when dropped unless installed.
pub struct StagedDir {
    temp: PathBuf,
    output: PathBuf,
    name: String,
}

impl StagedDir {
    /// Reserves the temporary path for `output` (not created here). Temporary directories
    /// of the same output left by killed runs are removed; an old one of this process too.
    pub fn new(output: &Path) -> anyhow::Result<Self> {
        let name = output
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| *n != "." && *n != "..")
            .with_context(|| format!("{} needs a directory name", output.display()))?;
        let parent = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!("{} does not exist", parent.display());
        }
        remove_stale_partials(parent, name);
        let temp = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if temp.exists() {
            std::fs::remove_dir_all(&temp)
                .with_context(|| format!("cannot remove {}", temp.display()))?;
        }
        Ok(StagedDir {
            temp,
            output: output.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The output's file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the finished directory to the output. Without `replace` an output that
    /// appeared meanwhile is never touched; with it, the old output is moved aside first
    /// and removed only once the new one is in place.
    pub fn install(self, replace: bool) -> anyhow::Result<()> {
        let output = &self.output;
        let aside =
            output.with_file_name(format!(".{}.replaced-{}", self.name, std::process::id()));
        let replacing = output.exists();
        if replacing && !replace {
            bail!(
                "{} appeared while processing; pass --force to replace it",
                output.display()
            );
        }
        if replacing {
            std::fs::rename(output, &aside)
                .with_context(|| format!("cannot move the old {} aside", output.display()))?;
        }
        if let Err(e) = std::fs::rename(&self.temp, output) {
            if replacing {
                std::fs::rename(&aside, output).ok();
            }
            return Err(anyhow::Error::new(e).context(format!(
                "cannot rename {} to {}",
                self.temp.display(),
                output.display()
            )));
        }
        // The rename itself made durable (the files were synced by their writers).
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).ok();
        }
        if replacing {
            if aside.is_dir() {
                std::fs::remove_dir_all(&aside).ok();
            } else {
                std::fs::remove_file(&aside).ok();
            }
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    /// An unfinished output goes away (after `install` the temporary path is gone).
    fn drop(&mut self) {
        if self.temp.exists() {
            std::fs::remove_dir_all(&self.temp).ok();
        }
    }
}

/// Removes `.NAME.partial-PID` directories left by runs that were killed (their PID no
/// longer exists); those of a live process writing the same output stay.
fn remove_stale_partials(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let dead = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if dead {
            log::info!("removing {} left by a killed run", entry.path().display());
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
}
