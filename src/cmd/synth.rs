//! `bayes_perception synth`: synthetic street scenes in the CamVid layout plus depth.

use std::path::PathBuf;
use std::process::ExitCode;

use super::progress::Progress;
use anyhow::{bail, Context};
use bayes_perception::colormap::FloatImage;
use bayes_perception::output::save_png;
use bayes_perception::synth::{render, SceneConfig};
use image::{ImageBuffer, Luma};

use crate::cli::SynthArgs;

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    if args.count == 0 || args.width < 32 || args.height < 32 {
        super::usage!("--count must be positive and the size at least 32x32");
    }
    if args.split.is_empty()
        || args.split.contains(['/', '\\'])
        || args.split == "."
        || args.split == ".."
    {
        super::usage!(
            "--split {:?} must be a plain name (it names the folders SPLIT/, SPLITannot/...)",
            args.split
        );
    }
    let [lo, hi] = args.noise_sigma[..] else {
        super::usage!("--noise-sigma takes two values, LO,HI");
    };
    if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
        super::usage!("--noise-sigma needs 0 <= LO <= HI, got {lo},{hi}");
    }
    let cfg = SceneConfig {
        width: args.width,
        height: args.height,
        ood: args.ood,
        noise_sigma: (lo, hi),
    };
    if args.bag {
        return write_bag(&args, cfg);
    }
    let split = args.split.as_str();
    let dirs = [
        split.to_owned(),
        format!("{split}annot"),
        format!("{split}depth"),
        format!("{split}noise"),
    ];
    let mut all_dirs = dirs.to_vec();
    if args.ood {
        all_dirs.push(format!("{split}ood"));
    }
    for d in &all_dirs {
        let path = args.out.join(d);
        let listed =
            || std::fs::read_dir(&path).with_context(|| format!("cannot list {}", path.display()));
        if path.exists() && listed()?.next().is_some() {
            bail!(
                "{} is not empty; choose another --out or --split",
                path.display()
            );
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let split_seed = split_seed(&args);
    let progress = Progress::new(args.count as u64, "scenes", "");
    // Ctrl-C or SIGTERM: the scene in hand is finished; a scene whose files cannot all be
    // written is removed whole. Either way every scene left has all its files.
    let interrupt = super::interrupt::graceful();
    let mut written = 0;
    for i in 0..args.count {
        if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let scene = render(split_seed, i as u64, cfg);
        let name = format!("{i:05}.png");
        let paths: Vec<PathBuf> = all_dirs
            .iter()
            .map(|d| args.out.join(d).join(&name))
            .collect();
        let saved = save_png(&paths[0], &scene.rgb)
            .and_then(|()| save_png(&paths[1], &scene.labels))
            .and_then(|()| save_png(&paths[2], &depth_png(&scene.depth_m)))
            .and_then(|()| save_png(&paths[3], &scene.noise_mask))
            .and_then(|()| match paths.get(4) {
                Some(path) => save_png(path, &scene.ood_mask),
                None => Ok(()),
            });
        if let Err(e) = saved {
            for path in &paths {
                std::fs::remove_file(path).ok();
            }
            progress.finish_and_clear();
            return Err(anyhow::Error::new(e).context(format!(
                "scene {i} not written ({written} complete scene(s) kept in {})",
                args.out.display()
            )));
        }
        written += 1;
        progress.inc();
    }
    progress.finish_and_clear();
    if written < args.count {
        println!(
            "interrupted: {written} complete scene(s) of {} written to {}",
            args.count,
            args.out.display()
        );
        return Ok(ExitCode::from(super::interrupt::EXIT_INTERRUPTED));
    }
    println!(
        "wrote {} {}scene(s) of {}x{} to {} ({split}/, {split}annot/ class ids 0..10 and 11 = void, \
         {split}depth/ 16-bit millimetres with 0 = no depth, {split}noise/{})",
        args.count,
        if args.ood { "out-of-distribution " } else { "" },
        args.width,
        args.height,
        args.out.display(),
        if args.ood { format!(", {split}ood/") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

/// A rendered depth as ground truth: `None` for no depth (NaN, not positive, or beyond
/// what the dataset's 16-bit millimetres hold, 65.535 m). Farther pixels (the ground plane
/// near the horizon lies kilometres away) have no ground-truth depth in the dataset and in
/// labelled bags alike, so both evaluate the same pixels.
fn ground_truth_m(m: f32) -> Option<f32> {
    let mm = (m * 1000.0).round();
    (mm.is_finite() && mm > 0.0 && mm <= u16::MAX as f32).then_some(m)
}

/// Metres to 16-bit millimetres; no ground-truth depth becomes 0 (invalid).
fn depth_png(depth: &FloatImage) -> ImageBuffer<Luma<u16>, Vec<u16>> {
    ImageBuffer::from_fn(depth.width(), depth.height(), |x, y| {
        let m = ground_truth_m(depth.get_pixel(x, y).0[0]);
        Luma([m.map_or(0, |m| (m * 1000.0).round() as u16)])
    })
}

/// Metres as a labelled bag's 32FC1 depth; no ground-truth depth becomes NaN.
fn depth_metres(depth: &FloatImage) -> FloatImage {
    let mut out = depth.clone();
    for v in out.iter_mut() {
        *v = ground_truth_m(*v).unwrap_or(f32::NAN);
    }
    out
}

/// Each split draws its own scenes from the one seed.
fn split_seed(args: &SynthArgs) -> u64 {
    args.split
        .bytes()
        .fold(args.seed, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

/// `synth --bag`: the scenes as one labelled bag (see `bag::labelled`).
fn write_bag(args: &SynthArgs, cfg: SceneConfig) -> anyhow::Result<ExitCode> {
    use bayes_perception::bag::cdr::CdrMessage;
    use bayes_perception::bag::labelled::{
        DEPTH_TOPIC, LABELS_TOPIC, NOISE_MASK_TOPIC, OOD_MASK_TOPIC,
    };
    use bayes_perception::bag::BagWriter;
    use bayes_perception::engine::LabelImage;
    use bayes_perception::msg::outputs::{float_message, label_message, rgb_message};
    use bayes_perception::msg::{CameraInfo, Header, Time};

    if args.out.exists() {
        bail!("{} exists; choose another --out", args.out.display());
    }
    const IMAGE: &str = "sensor_msgs/msg/Image";
    // Written under a temporary name and renamed when whole: a run stopped partway leaves
    // no bag without metadata.yaml at --out.
    let staged = super::staged::StagedDir::new(&args.out)?;
    let mut writer = BagWriter::create_named(staged.path(), staged.name())?;
    let t0: i64 = 1_700_000_000_000_000_000;
    // Ctrl-C or SIGTERM: the scene in hand is finished and the bag closed whole.
    let interrupt = super::interrupt::graceful();
    let mut written = 0;
    for i in 0..args.count {
        if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let scene = render(split_seed(args), i as u64, cfg);
        writer.hold_chunk();
        let stamp_ns = t0 + i as i64 * 100_000_000;
        let header = Header {
            stamp: Time::from_nanos(stamp_ns),
            frame_id: "camera_optical_frame".into(),
        };
        let log_time = stamp_ns as u64;
        let c = scene.camera;
        // The renderer's pixel centres are at u + 0.5, ROS's at u.
        let (cx, cy) = (c.cx - 0.5, c.cy - 0.5);
        let info = CameraInfo::pinhole(header.clone(), args.width, args.height, c.focal_px, cx, cy);
        writer.write(
            "/camera/camera_info",
            "sensor_msgs/msg/CameraInfo",
            log_time,
            &info.to_cdr(),
        )?;
        let mut ground_truth = vec![
            (
                LABELS_TOPIC,
                label_message(&header, &LabelImage::U8(scene.labels.clone())),
            ),
            (
                DEPTH_TOPIC,
                float_message(&header, &depth_metres(&scene.depth_m)),
            ),
            (
                NOISE_MASK_TOPIC,
                label_message(&header, &LabelImage::U8(scene.noise_mask.clone())),
            ),
        ];
        if args.ood {
            ground_truth.push((
                OOD_MASK_TOPIC,
                label_message(&header, &LabelImage::U8(scene.ood_mask.clone())),
            ));
        }
        for (topic, msg) in ground_truth {
            writer.write(&format!("/camera/{topic}"), IMAGE, log_time, &msg.to_cdr())?;
        }
        writer.write(
            "/camera/image_raw",
            IMAGE,
            log_time,
            &rgb_message(&header, scene.rgb).to_cdr(),
        )?;
        // A chunk per scene, as a recording's chunks hold a frame or so: a bag cut short
        // loses its last scene, not all of them (a dataset is a few thousand scenes: the
        // writer's index of them stays small).
        writer.flush()?;
        written += 1;
    }
    let summary = writer.finish()?;
    staged.install(false)?;
    if written < args.count {
        println!("interrupted: {written} complete scene(s) of {}", args.count);
    }
    println!(
        "wrote a labelled bag of {} {}scene(s) of {}x{} to {} ({} messages: /camera/image_raw, \
         /camera/camera_info, /camera/ground_truth/{{labels, depth, noise_mask{}}})",
        written,
        if args.ood { "out-of-distribution " } else { "" },
        args.width,
        args.height,
        args.out.display(),
        summary.message_count,
        if args.ood { ", ood_mask" } else { "" }
    );
    Ok(match written < args.count {
        true => ExitCode::from(super::interrupt::EXIT_INTERRUPTED),
        false => ExitCode::SUCCESS,
    })
}
