//! The eval report on disk (`eval --out DIR`): `report.json`, one CSV per curve, a PNG
//! chart per curve, and `report.md`, which embeds the charts and the contact sheets with
//! the command that made them. Charts have fixed axes so two reports compare by eye.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plot::{line_chart, Chart, Corner, Series};
use super::quality::Ranking;
use super::{
    format_ratio, format_value, Evaluation, Report, UncertaintyQuality, RECALLS, UNCERTAINTIES,
};
use crate::error::{Error, Result};

/// Histogram groups of the OOD charts (64 groups of the 4096 ranking bins).
const HISTOGRAM_GROUPS: usize = 64;

/// What `report.md` says about where the report came from.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The command line, as run.
    pub command: String,
    pub model: String,
    pub split: String,
    /// Contact sheets already written into the report directory (file names).
    pub sheets: Vec<String>,
    /// Where the frames were timed ([`crate::device::machine_summary`]); `None` for merged
    /// evaluations, timed wherever their parts ran.
    pub machine: Option<String>,
    /// Whether the model has no trained variance head ([`crate::model::ModelSpec::is_homoscedastic`]):
    /// report.md then says what its "aleatoric" column is.
    pub homoscedastic: bool,
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::output::write_file(path, text.as_bytes())
}

/// The report directory being written: every file goes through it, so the list of files
/// and the charts' places in report.md are kept in one spot.
struct Out<'a> {
    dir: &'a Path,
    written: Vec<PathBuf>,
    /// (report.md section, file name) of each chart.
    charts: Vec<(String, String)>,
}

impl Out<'_> {
    fn text(&mut self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        write_text(&path, text)?;
        self.written.push(path);
        Ok(())
    }

    fn chart(&mut self, section: &str, name: &str, chart: &Chart, series: &[Series]) -> Result<()> {
        let path = self.dir.join(name);
        line_chart(&path, chart, series)?;
        self.written.push(path);
        self.charts.push((section.to_owned(), name.to_owned()));
        Ok(())
    }
}

/// Per task: its name in file names and titles, the uncertainty unit, the x range of its
/// histograms, and what its kept-fraction curve shows.
struct Task<'a> {
    key: &'static str,
    title: &'static str,
    unit: &'static str,
    histogram_x: (f64, f64),
    kept_label: &'static str,
    kept_y: (f64, f64),
    present: [bool; 3],
    error: &'a [Ranking; 3],
    ood: &'a [Ranking; 3],
    qualities: &'a [UncertaintyQuality],
}

/// Writes every file of the report into `dir` (created if missing); returns their paths.
pub fn write_report(
    dir: &Path,
    evaluation: &Evaluation,
    provenance: &Provenance,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let report = evaluation.report();
    let mut out = Out {
        dir,
        written: Vec::new(),
        charts: Vec::new(),
    };
    out.text(
        "report.json",
        &serde_json::to_string_pretty(&report).expect("the report serialises"),
    )?;

    let mut tasks = Vec::new();
    if let Some(s) = &report.semantic {
        tasks.push(Task {
            key: "semantic",
            title: "Semantic",
            unit: "nats",
            histogram_x: (1e-6, 10.0),
            kept_label: "precision",
            // 0.8 to 1 unless a curve goes below 0.8 (then down in steps of 0.1).
            kept_y: (
                s.uncertainties
                    .iter()
                    .flat_map(|u| u.kept.iter().flatten())
                    .fold(0.8f64, |a, &b| a.min((b * 10.0).floor() / 10.0)),
                1.0,
            ),
            present: evaluation.semantic_present,
            error: &evaluation.semantic.error,
            ood: &evaluation.semantic.ood,
            qualities: &s.uncertainties,
        });
    }
    if let Some(d) = &report.depth {
        // RMS axis: 10 m unless a curve goes above it (then the next multiple of 10).
        let top = d
            .uncertainties
            .iter()
            .flat_map(|u| u.kept.iter().flatten())
            .fold(10.0f64, |a, &b| a.max((b / 10.0).ceil() * 10.0));
        tasks.push(Task {
            key: "depth",
            title: "Depth",
            unit: "m",
            histogram_x: (1e-3, 100.0),
            kept_label: "RMS (m)",
            kept_y: (0.0, top),
            present: evaluation.depth_present,
            error: &evaluation.depth.error,
            ood: &evaluation.depth.ood,
            qualities: &d.uncertainties,
        });
    }

    if let Some(s) = &report.semantic {
        let mut text = String::from("lower,upper,pixels,confidence,accuracy\n");
        for b in &s.reliability {
            let _ = writeln!(
                text,
                "{},{},{},{},{}",
                b.lower, b.upper, b.pixels, b.confidence, b.accuracy
            );
        }
        out.text("semantic_reliability.csv", &text)?;
        out.chart(
            "calibration",
            "semantic_reliability.png",
            &Chart {
                title: format!(
                    "Semantic reliability (ECE {}, calibration MSE {})",
                    format_value(s.ece, 4),
                    format_value(s.calibration_mse, 5)
                ),
                x_label: "confidence (mean probability of the label)".into(),
                y_label: "accuracy".into(),
                x: (0.0, 1.0),
                y: (0.0, 1.0),
                log_x: false,
                diagonal: true,
                legend: Corner::LowerRight,
            },
            &[Series::new(
                "pixels by confidence bin",
                s.reliability
                    .iter()
                    .map(|b| (b.confidence, b.accuracy))
                    .collect(),
            )
            .with_markers()],
        )?;
    }
    if let Some(d) = report
        .depth
        .as_ref()
        .filter(|d| !d.calibration_curve.is_empty())
    {
        let mut text = String::from("half_width_sigma,expected,observed\n");
        for c in d.coverage.iter().chain(&d.calibration_curve) {
            let _ = writeln!(text, "{},{},{}", c.half_width_sigma, c.expected, c.observed);
        }
        out.text("depth_calibration.csv", &text)?;
        let coverage: Vec<String> = d
            .coverage
            .iter()
            .map(|c| {
                format!(
                    "±{:.0}σ {:.2}/{:.2}",
                    c.half_width_sigma, c.observed, c.expected
                )
            })
            .collect();
        out.chart(
            "calibration",
            "depth_calibration.png",
            &Chart {
                title: format!(
                    "Depth intervals ({}; NLL {})",
                    coverage.join(", "),
                    format_value(d.nll, 2)
                ),
                x_label: "expected fraction inside the central interval".into(),
                y_label: "observed fraction".into(),
                x: (0.0, 1.0),
                y: (0.0, 1.0),
                log_x: false,
                diagonal: true,
                legend: Corner::LowerRight,
            },
            &[Series::new(
                "central 10..90 % intervals",
                d.calibration_curve
                    .iter()
                    .map(|c| (c.expected, c.observed))
                    .collect(),
            )
            .with_markers()],
        )?;
    }

    for task in &tasks {
        let kinds: Vec<usize> = (0..3).filter(|&k| task.present[k]).collect();
        let quality = |k: usize| {
            task.qualities
                .iter()
                .find(|q| q.uncertainty == UNCERTAINTIES[k])
        };
        // ROC curves: wrong pixels and OOD pixels.
        for (purpose, rankings, what) in [
            ("error", task.error, "wrong pixels"),
            ("ood", task.ood, "OOD pixels"),
        ] {
            let curves: Vec<(usize, Vec<(f64, f64)>)> = kinds
                .iter()
                .filter_map(|&k| rankings[k].roc().map(|r| (k, r)))
                .collect();
            if curves.is_empty() {
                continue;
            }
            let name = format!("roc_{}_{purpose}", task.key);
            let mut text = String::from("uncertainty,false_positive_rate,true_positive_rate\n");
            for (k, points) in &curves {
                for (fpr, tpr) in points {
                    let _ = writeln!(text, "{},{fpr},{tpr}", UNCERTAINTIES[*k]);
                }
            }
            out.text(&format!("{name}.csv"), &text)?;
            let series: Vec<Series> = curves
                .into_iter()
                .map(|(k, points)| {
                    let auroc = if purpose == "error" {
                        quality(k).and_then(|q| q.error_auroc)
                    } else {
                        quality(k).and_then(|q| q.ood_auroc)
                    };
                    Series::new(
                        format!("{} (AUROC {})", UNCERTAINTIES[k], format_value(auroc, 3)),
                        points,
                    )
                })
                .collect();
            out.chart(
                purpose,
                &format!("{name}.png"),
                &Chart {
                    title: format!("{}: uncertainty flags {what}", task.title),
                    x_label: "false positive rate".into(),
                    y_label: "true positive rate".into(),
                    x: (0.0, 1.0),
                    y: (0.0, 1.0),
                    log_x: false,
                    diagonal: true,
                    legend: Corner::LowerRight,
                },
                &series,
            )?;
        }
        // Precision / RMS of the least uncertain pixels.
        let kept: Vec<(usize, &Vec<f64>)> = kinds
            .iter()
            .filter_map(|&k| quality(k).and_then(|q| q.kept.as_ref()).map(|v| (k, v)))
            .collect();
        if !kept.is_empty() {
            let name = format!("kept_{}", task.key);
            let mut text = String::from("kept_percent");
            for (k, _) in &kept {
                let _ = write!(text, ",{}", UNCERTAINTIES[*k]);
            }
            text.push('\n');
            for (i, r) in RECALLS.iter().enumerate() {
                let _ = write!(text, "{}", r * 100.0);
                for (_, values) in &kept {
                    let _ = write!(text, ",{}", values[i]);
                }
                text.push('\n');
            }
            out.text(&format!("{name}.csv"), &text)?;
            let series: Vec<Series> = kept
                .iter()
                .map(|(k, values)| {
                    Series::new(
                        format!("by {}", UNCERTAINTIES[*k]),
                        RECALLS
                            .iter()
                            .map(|r| r * 100.0)
                            .zip(values.iter().copied())
                            .collect(),
                    )
                    .with_markers()
                })
                .collect();
            out.chart(
                "error",
                &format!("{name}.png"),
                &Chart {
                    title: format!(
                        "{}: {} of the least uncertain pixels",
                        task.title, task.kept_label
                    ),
                    x_label: "pixels kept, least uncertain first (%)".into(),
                    y_label: task.kept_label.into(),
                    x: (0.0, 100.0),
                    y: task.kept_y,
                    log_x: false,
                    diagonal: false,
                    legend: Corner::LowerLeft,
                },
                &series,
            )?;
        }
        // Histograms of each uncertainty on in-distribution and OOD pixels.
        let with_ood: Vec<usize> = kinds
            .iter()
            .copied()
            .filter(|&k| {
                task.ood[k].positives() > 0 && task.ood[k].positives() < task.ood[k].pixels()
            })
            .collect();
        if !with_ood.is_empty() {
            let name = format!("histogram_{}_ood", task.key);
            let mut text =
                String::from("uncertainty,lower_edge,in_distribution_pixels,ood_pixels\n");
            for &k in &with_ood {
                for (edge, inside, ood) in task.ood[k].histogram(HISTOGRAM_GROUPS) {
                    let _ = writeln!(text, "{},{edge},{inside},{ood}", UNCERTAINTIES[k]);
                }
            }
            out.text(&format!("{name}.csv"), &text)?;
            for &k in &with_ood {
                let groups = task.ood[k].histogram(HISTOGRAM_GROUPS);
                let (n_in, n_ood) = (
                    (task.ood[k].pixels() - task.ood[k].positives()) as f64,
                    task.ood[k].positives() as f64,
                );
                // Groups wholly left of the axis (0 included) are drawn in its first bar.
                let steps =
                    |pick: &dyn Fn(&(f64, u64, u64)) -> f64, total: f64| -> Vec<(f64, f64)> {
                        let mut points = Vec::new();
                        let mut left_of_axis = 0.0;
                        for (g, group) in groups.iter().enumerate() {
                            let upper = groups.get(g + 1).map_or(group.0 * 1.5, |next| next.0);
                            if upper <= task.histogram_x.0 && g + 1 < groups.len() {
                                left_of_axis += pick(group);
                                continue;
                            }
                            let f = (std::mem::take(&mut left_of_axis) + pick(group)) / total;
                            points.push((group.0.max(task.histogram_x.0), f));
                            points.push((upper, f));
                        }
                        points
                    };
                let inside = steps(&|g| g.1 as f64, n_in);
                let ood = steps(&|g| g.2 as f64, n_ood);
                let top = inside.iter().chain(&ood).fold(0.0f64, |a, p| a.max(p.1));
                out.chart(
                    "ood",
                    &format!("{name}_{}.png", UNCERTAINTIES[k]),
                    &Chart {
                        title: format!(
                            "{} {} uncertainty: in-distribution vs OOD pixels",
                            task.title, UNCERTAINTIES[k]
                        ),
                        x_label: format!(
                            "{} uncertainty ({}, log scale)",
                            UNCERTAINTIES[k], task.unit
                        ),
                        y_label: "fraction of pixels per bin".into(),
                        x: task.histogram_x,
                        y: (0.0, (top * 1.1).max(1e-3)),
                        log_x: true,
                        diagonal: false,
                        legend: Corner::UpperLeft,
                    },
                    &[
                        Series::new(format!("in-distribution ({n_in:.0} px)"), inside),
                        Series::new(format!("OOD ({n_ood:.0} px)"), ood),
                    ],
                )?;
            }
        }
    }

    let md = markdown(&report, provenance, &out.charts);
    out.text("report.md", &md)?;
    Ok(out.written)
}

/// The list of the files the last report wrote into its folder (paths relative to it,
/// one per line), kept in the folder.
pub const FILE_LIST: &str = ".eval_report_files";

/// After a report was written into `dir` (`written`: every file of it, sub-folders' too):
/// removes what the earlier report there wrote and this one did not (the charts of
/// another mode, contact sheets of more frames), as its [`FILE_LIST`] names them, with
/// sub-folders left empty; then lists this report's files. Files anyone else put there
/// are in no list and never touched. Returns how many files were removed.
pub fn tidy(dir: &Path, written: &[PathBuf]) -> Result<usize> {
    use std::path::Component;
    let list = dir.join(FILE_LIST);
    let now: std::collections::BTreeSet<String> = written
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok())
        .filter_map(|p| p.to_str().map(str::to_owned))
        .collect();
    let mut removed = 0;
    let earlier = crate::text_file::read_limited(&list, crate::text_file::MAX_CONFIG_BYTES)
        .unwrap_or_default();
    for name in earlier.lines() {
        let relative = Path::new(name);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if name.is_empty() || !plain || now.contains(name) || name == FILE_LIST {
            continue;
        }
        let path = dir.join(relative);
        // Never through a link: a listed `sub/x` where `sub` now links elsewhere is left.
        let through_link = path
            .ancestors()
            .take_while(|a| *a != dir)
            .any(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()));
        if through_link || !path.is_file() || std::fs::remove_file(&path).is_err() {
            continue;
        }
        removed += 1;
        // Folders it leaves empty (a set-up's split in `--compare`), up to `dir`.
        for folder in path.ancestors().skip(1) {
            if folder == dir || std::fs::remove_dir(folder).is_err() {
                break;
            }
        }
    }
    let mut text = now.into_iter().collect::<Vec<_>>().join("\n");
    text.push('\n');
    write_text(&list, &text)?;
    Ok(removed)
}

fn markdown(report: &Report, provenance: &Provenance, charts: &[(String, String)]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Evaluation of `{}` on `{}`\n",
        provenance.model, provenance.split
    );
    let _ = writeln!(md, "Made by:\n\n```sh\n{}\n```\n", provenance.command);
    if provenance.homoscedastic {
        let _ = writeln!(
            md,
            "The model has no trained variance head (a homoscedastic baseline): its semantic \
             \"aleatoric\" uncertainty is the entropy of its softmax (in mc mode the expected \
             entropy over the samples), not a learned aleatoric uncertainty, and it has no \
             depth aleatoric std.\n"
        );
    }
    let _ = writeln!(
        md,
        "{}, {:.0} ms per frame on {} (the first frame of each run predicted once more, untimed, before \
         the timed ones).\n",
        report.what(),
        report.ms_per_frame,
        provenance
            .machine
            .as_deref()
            .unwrap_or("the machines that ran the merged parts (their mean)")
    );
    if !report.left_out.is_empty() {
        let _ = writeln!(
            md,
            "**Not every frame of the input is in these figures:**\n\n```\n{}\n```\n",
            report.left_out.lines().join("\n")
        );
    }
    let _ = writeln!(md, "## Accuracy and calibration\n");
    let _ = writeln!(md, "| task | accuracy | calibration |\n|---|---|---|");
    if let Some(s) = &report.semantic {
        let _ = writeln!(
            md,
            "| semantic | mean IoU {:.3}, pixel accuracy {:.3} | ECE {}, calibration MSE {}, NLL {} |",
            s.mean_iou,
            s.pixel_accuracy,
            format_value(s.ece, 4),
            format_value(s.calibration_mse, 5),
            format_value(s.nll, 3)
        );
    }
    if let Some(d) = &report.depth {
        let coverage: Vec<String> = d
            .coverage
            .iter()
            .map(|c| {
                format!(
                    "±{:.0}σ {:.3} (expected {:.3})",
                    c.half_width_sigma, c.observed, c.expected
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | rel {:.3}, rms {:.2} m, δ1 {:.3} | {}; NLL {} |",
            report.depth_title(),
            d.rel,
            d.rms,
            d.deltas[0],
            if coverage.is_empty() {
                "no predicted std".to_owned()
            } else {
                coverage.join(", ")
            },
            match d.pixels_without_std {
                0 => format_value(d.nll, 3),
                n => format!(
                    "{} ({n} pixel(s) with a std of 0 or not finite left out)",
                    format_value(d.nll, 3)
                ),
            }
        );
    }
    md.push('\n');
    embed(&mut md, charts, "calibration");

    let _ = writeln!(md, "## Uncertainty: wrong pixels and OOD pixels\n");
    let _ = writeln!(
        md,
        "Wrong: misclassified; depth off by a factor ≥ {} (fails δ1). Ratios: mean on noise \
         patches (OOD objects) over the mean on the other pixels of the same frames. Kept \
         curve: precision (depth RMS) of the least uncertain 10 %, 20 %, .., 100 % of the \
         pixels only gets worse as more are kept.\n",
        super::DEPTH_ERROR_FACTOR
    );
    let _ = writeln!(
        md,
        "| task | uncertainty | error AUROC | error AP | OOD AUROC | noise / clean | OOD / in-dist. | kept curve |\n|---|---|---|---|---|---|---|---|"
    );
    let rows = report
        .semantic
        .iter()
        .flat_map(|s| s.uncertainties.iter().map(|u| ("semantic", u)))
        .chain(
            report
                .depth
                .iter()
                .flat_map(|d| d.uncertainties.iter().map(|u| ("depth", u))),
        );
    for (task, u) in rows {
        let _ = writeln!(
            md,
            "| {task} | {} | {} | {} | {} | {} | {} | {} |",
            u.uncertainty,
            format_value(u.error_auroc, 3),
            format_value(u.error_average_precision, 3),
            format_value(u.ood_auroc, 3),
            format_ratio(u.noise_ratio),
            format_ratio(u.ood_ratio),
            match u.kept_monotone {
                Some(true) => "monotone",
                Some(false) => "not monotone",
                None => "n/a",
            }
        );
    }
    md.push('\n');
    embed(&mut md, charts, "error");
    embed(&mut md, charts, "ood");
    if !provenance.sheets.is_empty() {
        let _ = writeln!(md, "## Frames\n");
        for sheet in &provenance.sheets {
            let _ = writeln!(md, "![{sheet}]({sheet})\n");
        }
    }
    md
}

fn embed(md: &mut String, charts: &[(String, String)], section: &str) {
    for (s, file) in charts {
        if s == section {
            let _ = writeln!(md, "![{file}]({file})\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_removes_only_what_the_earlier_report_listed_and_this_one_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("setup/test")).unwrap();
        for name in [
            "report.md",
            "old_chart.png",
            "setup/test/report.md",
            "mine.txt",
        ] {
            std::fs::write(d.join(name), name).unwrap();
        }
        std::fs::write(d.join("outside.txt"), "").unwrap();
        std::fs::write(
            d.join(FILE_LIST),
            "report.md\nold_chart.png\nsetup/test/report.md\n../outside.txt\n",
        )
        .unwrap();
        // A listed file behind a link that leads out of the folder stays.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("x.png"), "").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.join("linked")).unwrap();
        let mut list = std::fs::read_to_string(d.join(FILE_LIST)).unwrap();
        list.push_str("linked/x.png\n");
        std::fs::write(d.join(FILE_LIST), list).unwrap();
        let removed = tidy(d, &[d.join("report.md")]).unwrap();
        assert_eq!(removed, 2);
        assert!(elsewhere.path().join("x.png").exists());
        std::fs::remove_file(d.join("linked")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [FILE_LIST, "mine.txt", "outside.txt", "report.md"]);
        assert_eq!(
            std::fs::read_to_string(d.join(FILE_LIST)).unwrap(),
            "report.md\n"
        );
    }
}
