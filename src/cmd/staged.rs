//! An output directory built under a temporary name next to where it goes, and moved into
//! place only once complete: a failed or killed run never leaves a partial output that
//! looks finished, and a replaced output never mixes old files with new ones.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// `.NAME.partial-HOST-PID` next to the output `NAME`; removed when dropped unless
/// installed. The host name keeps runs on different machines sharing a filesystem (a
/// cluster's workers) apart: a run only ever removes temporary directories of its own host.
pub struct StagedDir {
    temp: PathBuf,
    output: PathBuf,
    name: String,
}

impl StagedDir {
    /// Reserves the temporary path for `output` (not created here). Temporary directories
    /// of the same output left by killed runs are removed; an old one of this process too.
    pub fn new(output: &Path) -> anyhow::Result<Self> {
        let (parent, name) = parent_and_name(output)?;
        remove_stale_partials(parent, |n| n == name);
        Self::reserve(parent, name, output)
    }

    /// For a run writing many outputs into one directory (`infer`): removes what killed
    /// runs left of any of `names` there, reading the directory once. Their `StagedDir`s
    /// then come from [`StagedDir::in_swept`], which does not read it again (`new` for
    /// each of N outputs would read N entries N times).
    pub fn sweep(parent: &Path, names: &HashSet<&str>) {
        remove_stale_partials(parent, |n| names.contains(n));
    }

    /// As [`StagedDir::new`], for an output whose directory [`StagedDir::sweep`] has
    /// cleaned: what a run killed meanwhile leaves there waits for the next run.
    pub fn in_swept(output: &Path) -> anyhow::Result<Self> {
        let (parent, name) = parent_and_name(output)?;
        Self::reserve(parent, name, output)
    }

    fn reserve(parent: &Path, name: &str, output: &Path) -> anyhow::Result<Self> {
        let temp = parent.join(format!(
            ".{name}.partial-{}-{}",
            bayes_perception::process::host_name(),
            std::process::id()
        ));
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
    /// appeared meanwhile is never touched; with it, the new output takes the old one's
    /// place in one step (the old one is removed afterwards), so a run killed at any
    /// point leaves the old output or the new one, never none.
    pub fn install(self, replace: bool) -> anyhow::Result<()> {
        let output = &self.output;
        let replacing = std::fs::symlink_metadata(output).is_ok();
        if replacing && !replace {
            bail!(
                "{} appeared while processing; pass --force to replace it",
                output.display()
            );
        }
        // The temporary directory's entries on the disk before it is renamed into place
        // (its files were synced by their writers). Best effort, as the parent's below: a
        // filesystem that cannot sync a directory (some FUSE and network mounts) would
        // otherwise lose every output written to it.
        if let Err(e) = bayes_perception::output::sync_path(&self.temp) {
            log::debug!("cannot sync {}: {e}", self.temp.display());
        }
        let moved = if replacing {
            self.replace_output()
        } else {
            rename_no_replace(&self.temp, output)
        };
        moved.with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.temp.display(),
                output.display()
            )
        })?;
        // The rename itself made durable (the files were synced by their writers).
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            bayes_perception::output::sync_path(parent).ok();
        }
        Ok(())
    }

    /// Swaps the finished directory with the output and removes the old one (now under the
    /// temporary name, which a later run removes if this one is killed first). Where the
    /// filesystem cannot swap, the old output is moved aside, the new one renamed into
    /// place, and the old one removed: a kill between the two renames leaves the old output
    /// as `.NAME.replaced-HOST-PID`.
    fn replace_output(&self) -> std::io::Result<()> {
        let output = &self.output;
        match exchange(&self.temp, output) {
            Ok(()) => {
                remove_any(&self.temp);
                return Ok(());
            }
            Err(e) if !unsupported(&e) => return Err(e),
            Err(_) => {}
        }
        let aside = output.with_file_name(format!(
            ".{}.replaced-{}-{}",
            self.name,
            bayes_perception::process::host_name(),
            std::process::id()
        ));
        std::fs::rename(output, &aside)?;
        if let Err(e) = std::fs::rename(&self.temp, output) {
            std::fs::rename(&aside, output).ok();
            return Err(e);
        }
        remove_any(&aside);
        Ok(())
    }
}

/// The directory an output goes into (which must exist) and its name.
fn parent_and_name(output: &Path) -> anyhow::Result<(&Path, &str)> {
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
    Ok((parent, name))
}

/// Removes a directory tree or a file, ignoring failure (what is left is only clutter).
fn remove_any(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path).ok();
    } else {
        std::fs::remove_file(path).ok();
    }
}

/// Whether a rename flag failed because the system or filesystem lacks it.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    ) || e.kind() == std::io::ErrorKind::Unsupported
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename2(_: &Path, _: &Path, _: u32) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Atomically swaps two existing paths.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return rename2(a, b, libc::RENAME_EXCHANGE);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    rename2(a, b, 0)
}

/// Renames `from` to `to` unless `to` exists (a plain rename would replace an empty
/// directory that appeared meanwhile); a plain rename where the filesystem lacks the flag.
pub fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    match rename2(from, to, libc::RENAME_NOREPLACE) {
        Err(e) if unsupported(&e) => {}
        done => return done,
    }
    std::fs::rename(from, to)
}

impl Drop for StagedDir {
    /// An unfinished output goes away (after `install` the temporary path is gone).
    fn drop(&mut self) {
        if self.temp.exists() {
            std::fs::remove_dir_all(&self.temp).ok();
        }
    }
}

/// Cleans up after runs on this host that were killed (their PID no longer exists):
/// their `.NAME.partial-HOST-PID` directories are removed, and an old output a killed
/// two-rename replacement left as `.NAME.replaced-HOST-PID` is put back where no output
/// took its place (removed otherwise). What belongs to a live process, or to another
/// host, stays.
fn remove_stale_partials(parent: &Path, wanted: impl Fn(&str) -> bool) {
    for (path, name, is_partial) in killed_runs_leftovers(parent, wanted) {
        let output = parent.join(&name);
        if !is_partial && std::fs::symlink_metadata(&output).is_err() {
            log::warn!(
                "putting back {} (an output a killed run was replacing)",
                output.display()
            );
            if std::fs::rename(&path, &output).is_ok() {
                continue;
            }
        }
        log::info!("removing {} left by a killed run", path.display());
        remove_any(&path);
    }
}

/// The temporary names in `parent` (`.NAME.partial-HOST-PID`, `.NAME.replaced-HOST-PID`)
/// of outputs `wanted` names, left by runs of this host that no longer exist, as (path,
/// NAME, whether it is a partial), in name order.
fn killed_runs_leftovers(
    parent: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(PathBuf, String, bool)> {
    let host = bayes_perception::process::host_name();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, String, bool)> = entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let (name, tail, is_partial) = file_name.to_str().and_then(temporary_name)?;
            (wanted(name) && owner_is_dead(tail, &host))
                .then(|| (entry.path(), name.to_owned(), is_partial))
        })
        .collect();
    found.sort();
    found
}

/// `.NAME.partial-TAIL` as (NAME, TAIL, true), `.NAME.replaced-TAIL` as (NAME, TAIL,
/// false); the last marker counts, so NAME may itself contain one.
fn temporary_name(file_name: &str) -> Option<(&str, &str, bool)> {
    let rest = file_name.strip_prefix('.')?;
    let partial = rest.rfind(".partial-");
    let replaced = rest.rfind(".replaced-");
    let (at, marker, is_partial) = match (partial, replaced) {
        (Some(p), Some(r)) if r > p => (r, ".replaced-", false),
        (Some(p), _) => (p, ".partial-", true),
        (None, Some(r)) => (r, ".replaced-", false),
        (None, None) => return None,
    };
    Some((&rest[..at], &rest[at + marker.len()..], is_partial))
}

/// The temporary directories of `output` (`.NAME.partial-HOST-PID`) that runs of this
/// host which were killed left: what they hold is still there (`StagedDir::new` removes
/// them).
pub fn killed_partials(output: &Path) -> Vec<PathBuf> {
    let Ok((parent, name)) = parent_and_name(output) else {
        return Vec::new();
    };
    killed_runs_leftovers(parent, |n| n == name)
        .into_iter()
        .filter(|(_, _, is_partial)| *is_partial)
        .map(|(path, _, _)| path)
        .collect()
}

/// Whether `output` exists or a run that may still be going (of this host and alive, or
/// of another host) is building it under a temporary name: a name to pass over when
/// looking for a free one. What killed runs of this host left is not in the way: the run
/// that takes the name removes it ([`StagedDir::new`]).
pub fn taken(output: &Path) -> bool {
    if std::fs::symlink_metadata(output).is_ok() {
        return true;
    }
    let Ok((parent, name)) = parent_and_name(output) else {
        return true;
    };
    let host = bayes_perception::process::host_name();
    std::fs::read_dir(parent).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(temporary_name)
                .is_some_and(|(n, tail, _)| n == name && !owner_is_dead(tail, &host))
        })
    })
}

/// Whether a temporary name's `HOST-PID` tail (`PID` alone in names of earlier versions,
/// taken as this host's) names a process of this host that no longer exists.
fn owner_is_dead(tail: &str, this_host: &str) -> bool {
    let (host, pid) = tail.rsplit_once('-').unwrap_or((this_host, tail));
    host == this_host
        && pid
            .parse::<libc::pid_t>()
            .is_ok_and(bayes_perception::process::is_gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The PID of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    fn stage(output: &Path, file: &str) -> StagedDir {
        let staged = StagedDir::new(output).unwrap();
        std::fs::create_dir(staged.path()).unwrap();
        std::fs::write(staged.path().join(file), file).unwrap();
        staged
    }

    #[test]
    fn install_replaces_the_old_output_whole_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        stage(&out, "old").install(false).unwrap();
        assert_eq!(names(&out), ["old"]);
        stage(&out, "new").install(true).unwrap();
        assert_eq!(names(&out), ["new"]);
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn exchange_swaps_two_directories_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("from_a"), "").unwrap();
        std::fs::create_dir(&b).unwrap();
        exchange(&a, &b).unwrap();
        assert_eq!(names(&b), ["from_a"]);
        assert!(names(&a).is_empty());
        // A plain rename would replace the empty directory `a`; this one refuses.
        let err = rename_no_replace(&b, &a).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(names(&a).is_empty() && names(&b) == ["from_a"]);
    }

    #[test]
    fn without_replace_an_output_that_appeared_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let staged = stage(&out, "new");
        // An empty directory, which a plain rename would silently replace.
        std::fs::create_dir(&out).unwrap();
        let err = staged.install(false).unwrap_err();
        assert!(err.to_string().contains("appeared"), "{err}");
        assert!(names(&out).is_empty());
        assert_eq!(names(dir.path()), ["out"], "the unfinished one is removed");
    }

    #[test]
    fn only_this_hosts_dead_runs_partials_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let host = bayes_perception::process::host_name();
        let dead = dead_pid();
        let live = std::os::unix::process::parent_id();
        let left = [
            format!(".out.partial-{host}-{dead}"),
            format!(".out.partial-{dead}"),
            format!(".out.partial-{host}-{live}"),
            format!(".out.partial-elsewhere-{dead}"),
            format!(".other.partial-{host}-{dead}"),
        ];
        for name in &left {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let staged = StagedDir::new(&dir.path().join("out")).unwrap();
        assert!(staged.path().starts_with(dir.path()));
        let mut expected = left[2..].to_vec();
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    #[test]
    fn an_old_output_a_killed_replacement_moved_aside_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let host = bayes_perception::process::host_name();
        let dead = dead_pid();
        let aside = dir.path().join(format!(".out.replaced-{host}-{dead}"));
        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join("old"), "").unwrap();
        let _staged = StagedDir::new(&dir.path().join("out")).unwrap();
        assert_eq!(names(dir.path()), ["out"]);
        assert_eq!(names(&dir.path().join("out")), ["old"]);
        // Where the new output did land, the old one is only clutter.
        std::fs::create_dir(&aside).unwrap();
        let _staged = StagedDir::new(&dir.path().join("out")).unwrap();
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[test]
    fn one_sweep_cleans_the_leftovers_of_every_named_output() {
        let dir = tempfile::tempdir().unwrap();
        let host = bayes_perception::process::host_name();
        let dead = dead_pid();
        let left = [
            format!(".a.partial-{host}-{dead}"),
            format!(".b.partial-{host}-{dead}"),
            format!(".c.partial-{host}-{dead}"),
        ];
        for name in &left {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        StagedDir::sweep(dir.path(), &HashSet::from(["a", "b"]));
        assert_eq!(names(dir.path()), [left[2].clone()], "c was not named");
        // Left by a run killed after the sweep: the next run's sweep removes it.
        std::fs::create_dir(dir.path().join(&left[0])).unwrap();
        let staged = StagedDir::in_swept(&dir.path().join("a")).unwrap();
        assert!(dir.path().join(&left[0]).exists());
        drop(staged);
    }

    #[test]
    fn a_name_being_built_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.salvaged");
        assert!(!taken(&out));
        let building = dir.path().join(".out.salvaged.partial-otherhost-12");
        std::fs::create_dir(&building).unwrap();
        assert!(taken(&out));
        std::fs::remove_dir(&building).unwrap();
        // What a killed run of this host left is removed by the next run of that name.
        let host = bayes_perception::process::host_name();
        let killed = dir
            .path()
            .join(format!(".out.salvaged.partial-{host}-{}", dead_pid()));
        std::fs::create_dir(&killed).unwrap();
        assert!(!taken(&out));
        let alive = dir.path().join(format!(
            ".out.salvaged.partial-{host}-{}",
            std::process::id()
        ));
        std::fs::create_dir(&alive).unwrap();
        assert!(taken(&out));
        std::fs::remove_dir(&alive).unwrap();
        std::fs::create_dir(&out).unwrap();
        assert!(taken(&out));
        // Another output's temporary name is not this one's.
        assert!(!taken(&dir.path().join("out")));
    }

    #[test]
    fn temporary_names_are_split_at_their_last_marker() {
        assert_eq!(
            temporary_name(".out.partial-h-1"),
            Some(("out", "h-1", true))
        );
        assert_eq!(
            temporary_name(".out.replaced-h-1"),
            Some(("out", "h-1", false))
        );
        assert_eq!(
            temporary_name(".a.partial-x.replaced-h-1"),
            Some(("a.partial-x", "h-1", false))
        );
        assert_eq!(
            temporary_name(".a.replaced-x.partial-7"),
            Some(("a.replaced-x", "7", true))
        );
        assert_eq!(temporary_name("out.partial-h-1"), None);
        assert_eq!(temporary_name(".out"), None);
    }
}
