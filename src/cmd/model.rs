//! `bayes_perception model init`: a model directory with random weights.

use std::process::ExitCode;

use anyhow::bail;
use bayes_perception::model::{random_spec, Model};
use tch::Device;

use crate::cli::ModelInitArgs;

pub fn init(args: ModelInitArgs) -> anyhow::Result<ExitCode> {
    let arch = super::preset(&args.arch)?;
    if args.out.exists() {
        bail!("{} already exists", args.out.display());
    }
    tch::manual_seed(args.seed);
    let mut spec = random_spec(
        arch,
        Some(&args.arch),
        args.classes,
        !args.no_depth,
        args.height,
        args.width,
    );
    spec.provenance.insert(
        "command".into(),
        std::env::args().collect::<Vec<_>>().join(" ").into(),
    );
    spec.provenance.insert("seed".into(), args.seed.into());
    spec.validate().map_err(anyhow::Error::msg)?;
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
