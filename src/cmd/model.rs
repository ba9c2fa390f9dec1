//! `bayes_perception model init`: a model directory with random weights; `model check`:
//! the settings and model of a run, loaded and described, nothing run.

use std::process::ExitCode;

use anyhow::bail;
use bayes_perception::device::device_name;
use bayes_perception::model::{random_spec, Model};
use bayes_perception::{Engine, EngineConfig};
use tch::Device;

use crate::cli::{ModelInitArgs, RunArgs};

pub fn init(args: ModelInitArgs) -> anyhow::Result<ExitCode> {
    let arch = super::preset(&args.arch)?;
    tch::manual_seed(args.seed);
    let mut spec = random_spec(
        arch,
        Some(&args.arch),
        args.classes,
        !args.no_depth,
        args.height,
        args.width,
    );
    spec.provenance
        .insert("command".into(), super::command_line(0).join(" ").into());
    spec.provenance.insert("seed".into(), args.seed.into());
    if let Err(e) = spec.validate() {
        super::usage!("{e}");
    }
    if args.out.exists() {
        bail!("{} already exists", args.out.display());
    }
    let model = Model::new(spec, Device::Cpu)?;
    model.save(&args.out)?;
    println!(
        "wrote {} ({}, {:.2} M parameters, random weights: outputs are meaningless)",
        args.out.display(),
        args.arch,
        model.num_parameters() as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

pub fn check(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (params, dir) = super::params_and_model(&args)?;
    super::warn_unused_overrides(&args.overrides, params.mode);
    let engine = Engine::load(&dir, EngineConfig::from_params(&params)?)?;
    let spec = &engine.model().spec;
    let passes = super::samples_label(&engine);
    println!(
        "ok: model {} ({}, {} classes, {}) on {}, {}, mode {} ({passes})",
        dir.display(),
        spec.name,
        spec.num_classes(),
        if spec.tasks.depth.is_some() {
            "depth"
        } else {
            "no depth"
        },
        device_name(engine.device()),
        params.precision,
        params.mode,
    );
    Ok(ExitCode::SUCCESS)
}
