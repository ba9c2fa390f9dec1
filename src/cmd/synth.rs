//! `bayes_perception synth`: synthetic street scenes in the CamVid layout plus depth.

use std::process::ExitCode;

use anyhow::{bail, Context};
use bayes_perception::synth::{render, SceneConfig};
use image::{ImageBuffer, Luma};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::SynthArgs;

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    if args.count == 0 || args.width < 32 || args.height < 32 {
        bail!("--count must be positive and the size at least 32x32");
    }
    let [lo, hi] = args.noise_sigma[..] else {
        bail!("--noise-sigma takes two values, LO,HI");
    };
    if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
        bail!("--noise-sigma needs 0 <= LO <= HI, got {lo},{hi}");
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
        if path.exists() && std::fs::read_dir(&path)?.next().is_some() {
            bail!(
                "{} is not empty; choose another --out or --split",
                path.display()
            );
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    // Each split draws its own scenes from the one seed.
    let split_seed = split
        .bytes()
        .fold(args.seed, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let cfg = SceneConfig {
        width: args.width,
        height: args.height,
        ood: args.ood,
        noise_sigma: (lo, hi),
    };
    let progress = ProgressBar::new(args.count as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} scenes, {per_sec}, ETA {eta}")
            .expect("valid template"),
    );
    for i in 0..args.count {
        let scene = render(split_seed, i as u64, cfg);
        let name = format!("{i:05}.png");
        let save = |dir: &str, result: image::ImageResult<()>| -> anyhow::Result<()> {
            result.with_context(|| {
                format!("cannot write {}", args.out.join(dir).join(&name).display())
            })
        };
        let at = |dir: &str| args.out.join(dir).join(&name);
        save(&dirs[0], scene.rgb.save(at(&dirs[0])))?;
        save(&dirs[1], scene.labels.save(at(&dirs[1])))?;
        save(&dirs[2], depth_png(&scene.depth_m).save(at(&dirs[2])))?;
        save(&dirs[3], scene.noise_mask.save(at(&dirs[3])))?;
        if args.ood {
            let dir = format!("{split}ood");
            save(&dir, scene.ood_mask.save(at(&dir)))?;
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
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

/// Metres to 16-bit millimetres; no depth (NaN) and beyond 65.535 m become 0 (invalid).
fn depth_png(depth: &bayes_perception::colormap::FloatImage) -> ImageBuffer<Luma<u16>, Vec<u16>> {
    ImageBuffer::from_fn(depth.width(), depth.height(), |x, y| {
        let m = depth.get_pixel(x, y).0[0];
        let mm = (m * 1000.0).round();
        Luma([if mm.is_finite() && mm > 0.0 && mm <= u16::MAX as f32 {
            mm as u16
        } else {
            0
        }])
    })
}
