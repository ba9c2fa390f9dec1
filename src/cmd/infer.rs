//! `bayes_perception infer`: images in, one output directory per image.

use bayes_perception::error::{is_transient_io, one_line};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use bayes_perception::camera::PinholeCamera;
use bayes_perception::device::device_name;
use bayes_perception::log_once::LogOnce;
use bayes_perception::output::{
    contact_sheet, is_prediction_file, open_photo, save_png, write_file, write_prediction,
};
use bayes_perception::points::{camera_info_from_calibration, points, to_ply, CloudOptions};
use bayes_perception::{Engine, EngineConfig};

use super::progress::Progress;
use super::staged::StagedDir;
use crate::cli::InferArgs;
use crate::EXIT_TRANSIENT;

pub fn run(args: InferArgs) -> anyhow::Result<ExitCode> {
    let (params, model_dir) = super::params_and_model(&args.run)?;
    super::warn_unused_overrides(&args.run.overrides, params.mode);
    let inputs = collect_inputs(&args.inputs, &args.out)?;
    // --out is tried before the model loads and any image is run (a folder that cannot be
    // written to, for permissions or a read-only mount, would fail every image only after
    // its inference): itself, or the folder it will be made in, which is made only once
    // the model has loaded (a model that fails leaves no empty --out behind).
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {} exists and is not a folder", args.out.display());
    }
    let writable = args
        .out
        .ancestors()
        .find(|dir| dir.is_dir())
        .unwrap_or(Path::new("."));
    super::can_create_in(writable, "infer")
        .with_context(|| format!("--out {}: cannot be written", args.out.display()))?;
    let engine = Engine::load(&model_dir, EngineConfig::from_params(&params)?)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let palette = engine.model().spec.palette();
    let camera_info = match (&args.camera_info, args.points) {
        (Some(path), true) => {
            if engine.model().spec.tasks.depth.is_none() {
                bail!(
                    "--points needs a model with depth; {} has none",
                    model_dir.display()
                );
            }
            Some(camera_info_from_calibration(path)?)
        }
        (Some(path), false) => {
            log::warn!(
                "--camera-info {} is read only with --points (the point cloud); ignored",
                path.display()
            );
            None
        }
        _ => None,
    };
    let cloud_options = CloudOptions::from_params(&params.points);
    // The calibration as the cloud will use it (the lens model matters for raw images
    // only), checked before any image is read.
    if let (Some(info), Some(path)) = (&camera_info, &args.camera_info) {
        PinholeCamera::for_image(info, info.width, info.height, cloud_options.rectified)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    log::info!(
        "model {} on {}, {}, mode {}, {} image(s)",
        model_dir.display(),
        device_name(engine.device()),
        params.precision,
        params.mode,
        inputs.len()
    );

    let progress = Progress::new(inputs.len() as u64, "images", "");
    let names = output_names(&inputs);
    StagedDir::sweep(&args.out, &names.iter().map(String::as_str).collect());
    let mut skipped = Vec::new();
    // Images written without the points.ply asked for (another aspect ratio than the
    // calibration's).
    let mut cloudless = Vec::new();
    let mut total_ms = 0.0;
    // Each doubt about the calibration (another aspect ratio than an image) said once.
    let doubts = LogOnce::new();
    let mut attempted = 0;
    // Ctrl-C or SIGTERM: the image in the work is finished, the rest are listed.
    let interrupt = super::interrupt::graceful();
    let mut interrupted = false;
    for (input, name) in inputs.iter().zip(&names) {
        if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        attempted += 1;
        progress.set_message(name.clone());
        // Written under a temporary name and then put in place of an earlier run's folder:
        // a failed write leaves no partial set, a rerun no stale files.
        let target = args.out.join(name);
        let result = if replaceable(&target) {
            open_photo(input)
                .map(|image| image.to_rgb8())
                .map_err(anyhow::Error::from)
        } else {
            Err(anyhow::anyhow!(
                "{} exists and is not an earlier infer output (those hold {OUTPUT_MARK} and \
                 only the files infer writes); left as it is",
                target.display()
            ))
        }
        .and_then(|image| {
            let prediction = engine.predict(&image)?;
            let ms = prediction.timing.total_ms;
            let staged = StagedDir::in_swept(&target)?;
            let dir = staged.path();
            write_prediction(dir, &prediction, &palette, &params.colormap, args.colorbar)?;
            write_file(
                &dir.join(OUTPUT_MARK),
                b"written by bayes_perception infer: a rerun into this --out replaces this folder\n",
            )?;
            if args.contact_sheet {
                let sheet = contact_sheet(&image, &prediction, &palette, &params.colormap);
                save_png(&dir.join(CONTACT_SHEET_FILE), &sheet)?;
            }
            if let Some(info) = &camera_info {
                if let Some(doubt) = info.doubt_for("", prediction.width, prediction.height) {
                    if doubts.is_new(&doubt) {
                        progress.suspend(|| log::warn!("{}: {doubt}", input.display()));
                    }
                }
                // The calibration was checked at its own size: what can fail here is an
                // image of another aspect ratio, said once above (the doubt); that image
                // gets its other outputs and no points.ply, counted in the summary.
                match PinholeCamera::for_image(
                    info,
                    prediction.width,
                    prediction.height,
                    cloud_options.rectified,
                ) {
                    Ok(camera) => {
                        let cloud = points(&prediction, &image, &camera, cloud_options)
                            .expect("a depth model");
                        let path = dir.join(POINTS_FILE);
                        let comment =
                            format!("bayes_perception infer, mode {}, {}", params.mode, name);
                        write_file(&path, &to_ply(&cloud, &comment))?;
                    }
                    Err(_) => cloudless.push((input, prediction.width, prediction.height)),
                }
            }
            staged.install(true)?;
            // The mean is over the images written.
            total_ms += ms;
            Ok(())
        });
        if let Err(err) = result {
            progress.suspend(|| log::warn!("skipped {}: {}", input.display(), one_line(&*err)));
            let stop = out_of_room(&err);
            skipped.push((input, err));
            if stop {
                break;
            }
        }
        progress.inc();
    }
    progress.finish_and_clear();
    // A signal during the last image: every image was attempted, and the run still says
    // it was interrupted (a stop for lack of room stays that, exit 75).
    interrupted |= attempted == inputs.len() && interrupt.load(std::sync::atomic::Ordering::SeqCst);

    let done = attempted - skipped.len();
    println!(
        "{done} of {} image(s) written to {} (mode {}, {} per frame on {}{})",
        inputs.len(),
        args.out.display(),
        params.mode,
        super::samples_label(&engine),
        device_name(engine.device()),
        if done > 0 {
            format!(", mean {:.0} ms", total_ms / done as f64)
        } else {
            String::new()
        }
    );
    for (input, err) in &skipped {
        println!("skipped {}: {}", input.display(), one_line(&**err));
    }
    if let (Some(info), false) = (&camera_info, cloudless.is_empty()) {
        println!(
            "no points.ply for {} image(s) of another aspect ratio than the calibration's \
             ({}x{}; their other outputs are written):",
            cloudless.len(),
            info.width,
            info.height
        );
        for (input, width, height) in &cloudless {
            println!("  {} ({width}x{height})", input.display());
        }
    }
    let not_attempted = &inputs[attempted..];
    if !not_attempted.is_empty() {
        println!(
            "{}: {} image(s) not attempted:",
            if interrupted {
                "interrupted"
            } else {
                "stopped after that failure"
            },
            not_attempted.len()
        );
        for input in not_attempted {
            println!("  {}", input.display());
        }
    } else if interrupted {
        println!("interrupted during the last image, which was still attempted");
    }
    // Out of memory or room: another try (with more free) may succeed.
    Ok(if interrupted {
        ExitCode::from(super::interrupt::EXIT_INTERRUPTED)
    } else if skipped.iter().any(|(_, err)| crate::is_transient(err)) {
        println!("(a temporary failure: another try may succeed; exit code {EXIT_TRANSIENT})");
        ExitCode::from(EXIT_TRANSIENT)
    } else if skipped.is_empty() && cloudless.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether `err` is a read or write that failed for lack of space, quota or file handles:
/// every image after it would fail the same way, so the run stops there.
fn out_of_room(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(is_transient_io)
    })
}

/// Files `infer` writes beside [`write_prediction`]'s.
const CONTACT_SHEET_FILE: &str = "contact_sheet.png";
const POINTS_FILE: &str = "points.ply";
/// The mark of a folder `infer` wrote: names alone would not tell an earlier output from a
/// folder of the user's holding, say, a ground-truth labels.png.
const OUTPUT_MARK: &str = ".bayes_perception_infer";

/// Whether `path` may be replaced by an image's new folder: absent, or a real directory
/// that an earlier run wrote (its mark) holding only files `infer` writes. Anything else
/// (an input, a model directory, a folder of images, an earlier output with a file of the
/// user's added) is never touched.
fn replaceable(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return true;
    };
    let ours = |name: &str| {
        is_prediction_file(name) || [CONTACT_SHEET_FILE, POINTS_FILE, OUTPUT_MARK].contains(&name)
    };
    meta.is_dir()
        && path.join(OUTPUT_MARK).is_file()
        && std::fs::read_dir(path).is_ok_and(|mut entries| {
            entries.all(|e| {
                e.is_ok_and(|e| {
                    e.file_type().is_ok_and(|t| t.is_file())
                        && e.file_name().to_str().is_some_and(ours)
                })
            })
        })
}

/// Files as given, plus the images directly inside given directories (sorted); folders
/// inside those are not searched, and said so (hidden ones and the output folder `out`
/// aside).
fn collect_inputs(paths: &[PathBuf], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::fs::canonicalize(out).ok();
    let unsearched_folder = |p: &Path| {
        p.is_dir()
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            && (out.is_none() || std::fs::canonicalize(p).ok() != out)
    };
    let mut files = Vec::new();
    let mut unsearched = 0;
    for path in paths {
        if path.is_dir() {
            let entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            let folders = entries.iter().filter(|p| unsearched_folder(p)).count();
            if folders > 0 {
                log::warn!(
                    "{}: {folders} folder(s) inside it not searched (images are read from the \
                     folder itself; give the folders too, e.g. {}/*/)",
                    path.display(),
                    path.display()
                );
                unsearched += folders;
            }
            let mut found: Vec<PathBuf> = entries
                .into_iter()
                // Formats this build reads (the image crate knows more by name).
                .filter(|p| {
                    p.is_file()
                        && image::ImageFormat::from_path(p).is_ok_and(|f| f.reading_enabled())
                })
                .collect();
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("input {} does not exist", path.display());
        }
    }
    if files.is_empty() {
        if unsearched > 0 {
            bail!(
                "no images found in the inputs given ({unsearched} folder(s) inside them not \
                 searched: give those folders)"
            );
        }
        bail!("no images found in the inputs given");
    }
    // An image given twice (a file and its folder, a link) is predicted once.
    let mut seen = HashSet::new();
    files.retain(|f| {
        let first = seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()));
        if !first {
            log::warn!("{} is an image given already; predicted once", f.display());
        }
        first
    });
    Ok(files)
}

/// One output directory name per input: the file stem; where stems collide, the fewest
/// folders above the files that tell them apart are put in front (`test/0001.png` and
/// `ood/0001.png` are `test_0001` and `ood_0001`; `run1/cam/0001.png` and
/// `run2/cam/0001.png` are `run1_cam_0001` and `run2_cam_0001`), then the extension where
/// only that differs (`a/x.png`, `a/x.jpg`: `a_x_png`, `a_x_jpg`); a counter settles the
/// rest (`a_x_png_2`).
fn output_names(inputs: &[PathBuf]) -> Vec<String> {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or("image".into(), |s| s.to_string_lossy().into_owned())
    };
    let stems: Vec<String> = inputs.iter().map(|p| stem(p)).collect();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, stem) in stems.iter().enumerate() {
        groups.entry(stem).or_default().push(i);
    }
    let mut names = stems.clone();
    for (stem, members) in groups.into_iter().filter(|(_, m)| m.len() > 1) {
        // Each file's folders, nearest first, from its absolute path (`../cam` is the
        // folder above's `cam`, a bare `0001.png` is in the current folder; links are
        // named as given, not by their targets).
        let folders: Vec<Vec<String>> = members
            .iter()
            .map(|&i| {
                let parent = absolute(inputs[i].parent().unwrap_or(Path::new("")));
                let mut names: Vec<String> = parent
                    .components()
                    .filter_map(|c| match c {
                        std::path::Component::Normal(name) => {
                            Some(name.to_string_lossy().into_owned())
                        }
                        _ => None,
                    })
                    .collect();
                names.reverse();
                names
            })
            .collect();
        let named = |depth: usize, k: usize, ext: bool| {
            let mut parts: Vec<String> = folders[k].iter().take(depth).rev().cloned().collect();
            parts.push(stem.to_owned());
            if ext {
                parts.extend(
                    inputs[members[k]]
                        .extension()
                        .map(|e| e.to_string_lossy().into_owned()),
                );
            }
            parts.join("_")
        };
        let distinct = |depth: usize, ext: bool| {
            let all: HashSet<String> = (0..members.len()).map(|k| named(depth, k, ext)).collect();
            all.len() == members.len()
        };
        // The fewest folders that tell the files apart; with the extension where the
        // folders do not (at least one folder where there is one).
        let deepest = folders.iter().map(Vec::len).max().unwrap_or(0);
        let fewest = |ext: bool| (1..=deepest).find(|&depth| distinct(depth, ext));
        let (depth, ext) = match (fewest(false), fewest(true)) {
            (Some(depth), _) => (depth, false),
            (None, Some(depth)) => (depth, true),
            // The same path more than once.
            (None, None) => (0, true),
        };
        for (k, &i) in members.iter().enumerate() {
            names[i] = named(depth, k, ext);
        }
    }
    // The next counter of each base name is kept: K clashes of one name cost K tries in
    // all, not K² (many copies of one name).
    let mut seen = HashSet::new();
    let mut next: HashMap<String, usize> = HashMap::new();
    names
        .into_iter()
        .map(|base| {
            let mut name = base.clone();
            while !seen.insert(name.clone()) {
                let n = next.entry(base.clone()).or_insert(2);
                name = format!("{base}_{n}");
                *n += 1;
            }
            name
        })
        .collect()
}

/// `path` made absolute (against the current folder) with `.` and `..` resolved as written,
/// without following links; as given where the current folder is unknown.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_unique_and_say_where_stems_collide() {
        let inputs: Vec<PathBuf> = [
            "test/0001.png",
            "ood/0001.png",
            "a/x.png",
            "a/x.jpg",
            "solo.png",
            "b/a_x.png",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            output_names(&inputs),
            ["test_0001", "ood_0001", "a_x_png", "a_x_jpg", "solo", "a_x"]
        );
        // Two runs of one camera: the folder that differs is named, not the extension.
        let runs: Vec<PathBuf> = [
            "run1/cam/0001.png",
            "run2/cam/0001.png",
            "/data/run1/cam/0002.png",
            "/data/run2/x/../cam/0002.png",
            "/data/./0002.png",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            output_names(&runs),
            [
                "run1_cam_0001",
                "run2_cam_0001",
                "run1_cam_0002",
                "run2_cam_0002",
                "data_0002"
            ]
        );
        // Files of one folder that differ by extension alone: that folder, not the path.
        let deep: Vec<PathBuf> = ["/no/such/home/data/a/x.png", "/no/such/home/data/a/x.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(output_names(&deep), ["a_x_png", "a_x_jpg"]);
        // Names of one group clashing with another's are counted.
        let clash: Vec<PathBuf> = ["a/x.png", "b/x.png", "a_x.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(output_names(&clash), ["a_x", "b_x", "a_x_2"]);
        let many: Vec<PathBuf> = (0..3).map(|_| PathBuf::from("same.png")).collect();
        assert_eq!(
            output_names(&many),
            ["same_png", "same_png_2", "same_png_3"]
        );
    }
}
