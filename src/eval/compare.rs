//! The paper's comparison (Kendall & Gal, Tables 1-3 and the calibration MSEs): the same
//! data through four set-ups, one table.
//!
//! | row | model | mode |
//! |---|---|---|
//! | no uncertainty | homoscedastic baseline (no variance heads) | aleatoric (one pass) |
//! | aleatoric | heteroscedastic model | aleatoric (one pass) |
//! | epistemic | homoscedastic baseline | mc (T passes) |
//! | aleatoric + epistemic | heteroscedastic model | mc (T passes) |
//!
//! Error and OOD detection use each row's total uncertainty: the predictive entropy H[p̄]
//! (for the baseline in one pass, the softmax entropy) and the depth std √(aleatoric² +
//! epistemic²) (none for the baseline in one pass).

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Mode;
use crate::model::ModelSpec;

use super::{format_value, Report, UncertaintyQuality};

/// One set-up of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Directory name of its report.
    pub key: &'static str,
    pub name: &'static str,
    /// The homoscedastic baseline model (else the heteroscedastic one).
    pub baseline: bool,
    pub mode: Mode,
}

pub const SETUPS: [Setup; 4] = [
    Setup {
        key: "no_uncertainty",
        name: "no uncertainty",
        baseline: true,
        mode: Mode::Aleatoric,
    },
    Setup {
        key: "aleatoric",
        name: "aleatoric",
        baseline: false,
        mode: Mode::Aleatoric,
    },
    Setup {
        key: "epistemic",
        name: "epistemic",
        baseline: true,
        mode: Mode::Mc,
    },
    Setup {
        key: "aleatoric_epistemic",
        name: "aleatoric + epistemic",
        baseline: false,
        mode: Mode::Mc,
    },
];

/// Why a pair of models cannot be compared, if it cannot: the baseline must have no
/// trained variance head, the other model one for every task, and both the same tasks
/// and classes.
pub fn check_pair(model: &ModelSpec, baseline: &ModelSpec) -> Result<(), String> {
    let (model_heads, baseline_heads) = (model.variance_heads(), baseline.variance_heads());
    if model_heads.0.is_some() != baseline_heads.0.is_some()
        || model_heads.1.is_some() != baseline_heads.1.is_some()
        || model.num_classes() != baseline.num_classes()
    {
        return Err("the model and the baseline must have the same tasks and classes".into());
    }
    if !baseline.is_homoscedastic() {
        return Err("the baseline has a trained variance head: train it with \
                    `loss.homoscedastic: true`"
            .into());
    }
    if [model_heads.0, model_heads.1].contains(&Some(false)) {
        return Err(
            "the model is homoscedastic: the comparison needs one trained with \
                    the paper's losses (`loss.homoscedastic: false`)"
                .into(),
        );
    }
    Ok(())
}

/// One row of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setup: String,
    pub model: String,
    pub mode: String,
    pub samples: usize,
    pub mean_iou: Option<f64>,
    pub pixel_accuracy: Option<f64>,
    pub depth_rel: Option<f64>,
    pub depth_rms: Option<f64>,
    pub calibration_mse: Option<f64>,
    pub ece: Option<f64>,
    /// Semantic NLL of the true class, nats.
    pub nll: Option<f64>,
    pub depth_nll: Option<f64>,
    /// AUROC of the total uncertainty for wrong pixels (test split).
    pub error_auroc: Option<f64>,
    pub depth_error_auroc: Option<f64>,
    /// AUROC of the total uncertainty for OOD pixels (OOD split).
    pub ood_auroc: Option<f64>,
    pub depth_ood_auroc: Option<f64>,
    pub ms_per_frame: f64,
}

fn total(list: &[UncertaintyQuality]) -> Option<&UncertaintyQuality> {
    list.iter().find(|u| u.uncertainty == "total")
}

/// The row of a set-up from its report on the test split and, if there is one, on the OOD
/// split.
pub fn row(setup: &Setup, model: &str, test: &Report, ood: Option<&Report>) -> Row {
    let semantic = test.semantic.as_ref();
    let depth = test.depth.as_ref();
    let ood_total = |semantic: bool| {
        ood.and_then(|r| match semantic {
            true => r.semantic.as_ref().and_then(|s| total(&s.uncertainties)),
            false => r.depth.as_ref().and_then(|d| total(&d.uncertainties)),
        })
        .and_then(|u| u.ood_auroc)
    };
    Row {
        setup: setup.name.to_owned(),
        model: model.to_owned(),
        mode: test.mode.clone(),
        samples: test.samples,
        mean_iou: semantic.map(|s| s.mean_iou),
        pixel_accuracy: semantic.map(|s| s.pixel_accuracy),
        depth_rel: depth.map(|d| d.rel),
        depth_rms: depth.map(|d| d.rms),
        calibration_mse: semantic.and_then(|s| s.calibration_mse),
        ece: semantic.and_then(|s| s.ece),
        nll: semantic.and_then(|s| s.nll),
        depth_nll: depth.and_then(|d| d.nll),
        error_auroc: semantic
            .and_then(|s| total(&s.uncertainties))
            .and_then(|u| u.error_auroc),
        depth_error_auroc: depth
            .and_then(|d| total(&d.uncertainties))
            .and_then(|u| u.error_auroc),
        ood_auroc: ood_total(true),
        depth_ood_auroc: ood_total(false),
        ms_per_frame: test.ms_per_frame,
    }
}

/// The table as Markdown, the best value of each quality column in bold.
pub fn markdown(rows: &[Row]) -> String {
    type Column = (&'static str, fn(&Row) -> Option<f64>, usize, bool);
    // (header, value, digits, higher is better)
    let columns: [Column; 13] = [
        ("mIoU", |r| r.mean_iou, 3, true),
        ("accuracy", |r| r.pixel_accuracy, 3, true),
        ("depth rel", |r| r.depth_rel, 3, false),
        ("depth RMS (m)", |r| r.depth_rms, 2, false),
        ("calibration MSE", |r| r.calibration_mse, 5, false),
        ("ECE", |r| r.ece, 4, false),
        ("NLL", |r| r.nll, 3, false),
        ("depth NLL", |r| r.depth_nll, 3, false),
        ("error AUROC", |r| r.error_auroc, 3, true),
        ("depth error AUROC", |r| r.depth_error_auroc, 3, true),
        ("OOD AUROC", |r| r.ood_auroc, 3, true),
        ("depth OOD AUROC", |r| r.depth_ood_auroc, 3, true),
        ("ms per frame", |r| Some(r.ms_per_frame), 0, false),
    ];
    let mut md = String::from("| set-up |");
    for (header, ..) in &columns {
        let _ = write!(md, " {header} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(columns.len()));
    md.push('\n');
    for r in rows {
        if r.mode == "mc" {
            let _ = write!(md, "| {} (mc, T = {}) |", r.setup, r.samples);
        } else {
            let _ = write!(md, "| {} (1 pass) |", r.setup);
        }
        for (_, value, digits, higher) in &columns {
            let best =
                rows.iter()
                    .filter_map(value)
                    .fold(None, |best: Option<f64>, v| match best {
                        Some(b) if (*higher && b >= v) || (!*higher && b <= v) => Some(b),
                        _ => Some(v),
                    });
            let text = format_value(value(r), *digits);
            // Timing is reported, not ranked.
            let bold = *digits > 0 && value(r).is_some() && value(r) == best && rows.len() > 1;
            if bold {
                let _ = write!(md, " **{text}** |");
            } else {
                let _ = write!(md, " {text} |");
            }
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(setup: &str, mse: Option<f64>, auroc: Option<f64>) -> Row {
        Row {
            setup: setup.into(),
            model: "m".into(),
            mode: "mc".into(),
            samples: 10,
            mean_iou: Some(0.5),
            pixel_accuracy: Some(0.9),
            depth_rel: None,
            depth_rms: None,
            calibration_mse: mse,
            ece: None,
            nll: None,
            depth_nll: None,
            error_auroc: auroc,
            depth_error_auroc: None,
            ood_auroc: None,
            depth_ood_auroc: None,
            ms_per_frame: 12.0,
        }
    }

    #[test]
    fn markdown_marks_the_best_of_each_column() {
        let md = markdown(&[
            row("a", Some(0.005), Some(0.7)),
            row("b", Some(0.002), Some(0.9)),
        ]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        assert!(lines[2].starts_with("| a (mc, T = 10) |"));
        // Lower calibration MSE and higher AUROC win; missing values are n/a.
        assert!(
            lines[3].contains("**0.00200**") && lines[3].contains("**0.900**"),
            "{md}"
        );
        assert!(
            lines[2].contains(" 0.00500 |") && lines[2].contains(" n/a |"),
            "{md}"
        );
        // Ties are bold in both rows; timing never is.
        assert!(lines[2].contains("**0.500**") && lines[3].contains("**0.500**"));
        assert!(!md.contains("**12**"));
    }

    #[test]
    fn pairs_are_checked() {
        use crate::model::{random_spec, ArchConfig};
        let arch = ArchConfig::preset("fcdensenet56").unwrap();
        let hetero = random_spec(arch.clone(), None, 11, true, 32, 32);
        let mut homo = hetero.clone();
        homo.tasks.semantic.as_mut().unwrap().aleatoric = false;
        homo.tasks.depth.as_mut().unwrap().aleatoric = false;
        assert_eq!(check_pair(&hetero, &homo), Ok(()));
        assert!(check_pair(&hetero, &hetero)
            .unwrap_err()
            .contains("homoscedastic: true"));
        assert!(check_pair(&homo, &homo)
            .unwrap_err()
            .contains("the model is homoscedastic"));
        let other = random_spec(arch, None, 5, true, 32, 32);
        assert!(check_pair(&other, &homo)
            .unwrap_err()
            .contains("same tasks and classes"));
    }
}
