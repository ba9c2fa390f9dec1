//! `bayes_perception eval`: accuracy and uncertainty quality of a model on a split.

use std::process::ExitCode;

use bayes_perception::eval::{evaluate, Report, RECALLS};
use bayes_perception::{Engine, EngineConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::EvalArgs;

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let (params, model_dir) = super::params_and_model(&args.run)?;
    let engine = Engine::load(&model_dir, EngineConfig::from_params(&params)?)?;
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, ETA {eta}")
            .expect("valid template"),
    );
    let report = evaluate(&engine, &args.data, &args.split, args.max_images, |i, n| {
        progress.set_length(n as u64);
        progress.set_position(i as u64);
    })?;
    progress.finish_and_clear();
    print_report(&report, &args.split);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &Report, split: &str) {
    println!(
        "split {split}: {} images, mode {} ({} sample(s))",
        r.images, r.mode, r.samples
    );
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
    println!(
        "  mean IoU {}, pixel accuracy {}",
        opt(r.mean_iou),
        opt(r.pixel_accuracy)
    );
    println!(
        "  depth rel {}, rms {} m, log10 {}",
        opt(r.depth_rel),
        opt(r.depth_rms),
        opt(r.depth_log10)
    );
    if let Some(d) = r.depth_deltas {
        println!(
            "  depth delta < 1.25: {:.3}, < 1.25^2: {:.3}, < 1.25^3: {:.3}",
            d[0], d[1], d[2]
        );
    }
    let header: Vec<String> = RECALLS
        .iter()
        .map(|r| format!("{:>5.0}%", r * 100.0))
        .collect();
    println!("  kept (least uncertain first): {}", header.join(" "));
    for (name, curve) in [
        ("precision by sem. aleatoric ", &r.precision_by_aleatoric),
        ("precision by sem. epistemic ", &r.precision_by_epistemic),
        ("depth RMS by depth aleatoric", &r.depth_rms_by_aleatoric),
        ("depth RMS by depth epistemic", &r.depth_rms_by_epistemic),
    ] {
        if let Some(c) = curve {
            let cells: Vec<String> = c.iter().map(|v| format!("{v:>6.3}")).collect();
            println!("  {name}: {}", cells.join(" "));
        }
    }
    for (name, value) in [
        (
            "semantic aleatoric on noise patches / clean",
            r.semantic_aleatoric_noise_ratio,
        ),
        (
            "depth aleatoric on noise patches / clean",
            r.depth_aleatoric_noise_ratio,
        ),
        (
            "semantic epistemic on OOD objects / in-distribution",
            r.semantic_epistemic_ood_ratio,
        ),
        (
            "depth epistemic on OOD objects / in-distribution",
            r.depth_epistemic_ood_ratio,
        ),
    ] {
        if let Some(v) = value {
            println!("  {name}: {v:.2}x");
        }
    }
    if let Some([noisy, clean]) = r.noise_patch_accuracy {
        println!("  pixel accuracy on noise patches: {noisy:.3} (clean pixels: {clean:.3})");
    }
    if let Some([noisy, clean]) = r.noise_patch_depth_rel {
        println!("  depth rel on noise patches: {noisy:.3} (clean pixels: {clean:.3})");
    }
}
