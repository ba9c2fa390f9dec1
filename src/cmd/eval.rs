//! `bayes_perception eval`: accuracy and uncertainty quality of a model on a split.

use std::process::ExitCode;

use bayes_perception::eval::{evaluate, Report, UncertaintyQuality, RECALLS};
use bayes_perception::{Engine, EngineConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::EvalArgs;

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let (params, model_dir) = super::params_and_model(&args.run)?;
    let config = EngineConfig {
        keep_probabilities: true,
        ..EngineConfig::from_params(&params)?
    };
    let engine = Engine::load(&model_dir, config)?;
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, ETA {eta}")
            .expect("valid template"),
    );
    let evaluation = evaluate(&engine, &args.data, &args.split, args.max_images, |i, n| {
        progress.set_length(n as u64);
        progress.set_position(i as u64);
    })?;
    progress.finish_and_clear();
    let report = evaluation.report();
    print_report(&report, &args.split);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn print_report(r: &Report, split: &str) {
    println!(
        "split {split}: {} images, mode {} ({} sample(s)), {:.0} ms per frame",
        r.images, r.mode, r.samples, r.ms_per_frame
    );
    let header: Vec<String> = RECALLS
        .iter()
        .map(|r| format!("{:>5.0}%", r * 100.0))
        .collect();
    if let Some(s) = &r.semantic {
        println!(
            "semantic: mean IoU {:.3}, pixel accuracy {:.3}, NLL {}, ECE {}, calibration MSE {}",
            s.mean_iou,
            s.pixel_accuracy,
            opt(s.nll, 3),
            opt(s.ece, 4),
            opt(s.calibration_mse, 5)
        );
        let bins: Vec<String> = s
            .reliability
            .iter()
            .map(|b| format!("{:.2}->{:.3}", b.confidence, b.accuracy))
            .collect();
        println!("  reliability (confidence -> accuracy): {}", bins.join(" "));
        if let Some([noisy, clean]) = s.noise_patch_accuracy {
            println!("  pixel accuracy on noise patches {noisy:.3}, clean pixels {clean:.3}");
        }
        print_uncertainties(&s.uncertainties, "precision", &header);
    }
    if let Some(d) = &r.depth {
        println!(
            "depth: rel {:.3}, rms {:.3} m, log10 {:.3}, delta < 1.25/1.25^2/1.25^3: {:.3}/{:.3}/{:.3}, NLL {}",
            d.rel,
            d.rms,
            d.log10,
            d.deltas[0],
            d.deltas[1],
            d.deltas[2],
            opt(d.nll, 3)
        );
        for c in &d.coverage {
            println!(
                "  within ±{:.0} sigma: {:.3} (expected {:.3})",
                c.half_width_sigma, c.observed, c.expected
            );
        }
        if let Some([noisy, clean]) = d.noise_patch_rel {
            println!("  depth rel on noise patches {noisy:.3}, clean pixels {clean:.3}");
        }
        print_uncertainties(&d.uncertainties, "RMS (m)", &header);
    }
}

fn print_uncertainties(list: &[UncertaintyQuality], score: &str, header: &[String]) {
    for u in list {
        let ratio = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}x"));
        println!(
            "  {:<10} error AUROC {}, AP {}; OOD AUROC {}; noise/clean {}; OOD/in-dist. {}",
            u.uncertainty,
            opt(u.error_auroc, 3),
            opt(u.error_average_precision, 3),
            opt(u.ood_auroc, 3),
            ratio(u.noise_ratio),
            ratio(u.ood_ratio)
        );
    }
    println!("  {score} of the least uncertain:  {}", header.join(" "));
    for u in list {
        if let Some(kept) = &u.kept {
            let cells: Vec<String> = kept.iter().map(|v| format!("{v:>6.3}")).collect();
            println!(
                "    by {:<10}              {}",
                u.uncertainty,
                cells.join(" ")
            );
        }
    }
}
