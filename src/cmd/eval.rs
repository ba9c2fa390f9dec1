//! `bayes_perception eval`: accuracy and uncertainty quality of a model on a split, and
//! (`--compare`) the paper's four set-ups side by side.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use super::progress::Progress;
use super::staged::StagedDir;
use anyhow::Context;
use bayes_perception::bag::labelled::{read_labelled_frames, LabelledTopics};
use bayes_perception::bag::BagReader;
use bayes_perception::config::Mode;
use bayes_perception::config::Params;
use bayes_perception::device::machine_summary;
use bayes_perception::eval::agreement::{Agreement, AgreementReport};
use bayes_perception::eval::compare::{self, check_pair, SETUPS};
use bayes_perception::eval::files::{tidy, write_report, Provenance};
use bayes_perception::eval::{
    evaluate_together, format_ratio, format_value, Evaluation, EvaluationState, Evaluator, LeftOut,
    Report, UncertaintyQuality, RECALLS,
};
use bayes_perception::model::ModelSpec;
use bayes_perception::output::{contact_sheet, save_png, write_file};
use bayes_perception::{Engine, EngineConfig};

use crate::cli::EvalArgs;

/// `eval`; with `--json`, a run that stops with an error before its report is written
/// leaves an error report there instead (`status` "error" or "retry", `exit_code`,
/// `error`), so a script finds a file either way.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let json = args.json.clone();
    if let Some(path) = &json {
        super::check_report_path(path, args.out.as_deref())?;
    }
    let result = evaluate(args);
    // The report is the run's last step: an error is never after it.
    if let (Err(e), Some(path)) = (&result, json) {
        super::write_error_report(&path, serde_json::Map::new(), e);
    }
    result
}

/// How an evaluation ended, as its `--json` report's `status` and `exit_code` say it.
#[derive(Clone, Copy, PartialEq)]
enum Ended {
    /// "ok", 0.
    Whole,
    /// "damaged", 1: an input was read only up to damage.
    Damaged,
    /// "interrupted", 130: stopped by a signal; the figures cover the frames before.
    Interrupted,
}

/// The report as `--json`, written last (after `--out`), with the run's `status` and
/// `exit_code` as an error report and bag process's report have them.
fn write_report_json(path: &Path, report: &Report, ended: Ended) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(report)?;
    if let Some(fields) = value.as_object_mut() {
        let (status, code) = match ended {
            Ended::Whole => ("ok", 0),
            Ended::Damaged => ("damaged", 1),
            Ended::Interrupted => ("interrupted", super::interrupt::EXIT_INTERRUPTED),
        };
        fields.insert("status".into(), status.into());
        fields.insert("exit_code".into(), code.into());
    }
    write_file(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

fn evaluate(args: EvalArgs) -> anyhow::Result<ExitCode> {
    if !args.merge.is_empty() || args.merge_list.is_some() {
        return run_merge(&args);
    }
    let (params, model_dir) = super::params_and_model(&args.run)?;
    if args.compare {
        return run_compare(&args, &params, &model_dir);
    }
    // Ctrl-C, SIGTERM or SIGHUP stops after the frame in hand with a report of the frames
    // before (--json "interrupted", exit 130); a second one stops at once.
    let interrupt = super::interrupt::graceful();
    // Settings first, then the (slower) model loads.
    let reference_params = match args.agreement_with_mc {
        Some(samples) => {
            let mut mc = params.clone();
            mc.mode = Mode::Mc;
            mc.mc.samples = samples;
            mc.validate("--agreement-with-mc")?;
            Some(mc)
        }
        None => None,
    };
    // Flags neither engine reads: the MC reference takes its T from --agreement-with-mc.
    let overrides = &args.run.overrides;
    let unused: Vec<&str> = super::unused_overrides(overrides, params.mode)
        .into_iter()
        .filter(|flag| {
            reference_params.is_none()
                || *flag == "--samples"
                || super::unused_overrides(overrides, Mode::Mc).contains(flag)
        })
        .collect();
    super::warn_of_unused(&unused, params.mode);
    // The model a state names, taken before it loads: its files may change while the
    // evaluation runs (a training writing checkpoints), and a failure here should not
    // come after hours of work.
    let model_sha256 = match &args.state {
        Some(_) => Some(bayes_perception::model::fingerprint(&model_dir)?),
        None => None,
    };
    let engine = load(&model_dir, &params)?;
    let reference = reference_params
        .map(|mc| load(&model_dir, &mc))
        .transpose()?;
    if interrupt.load(Ordering::SeqCst) {
        return Err(super::Interrupted("before the first frame").into());
    }
    let (evaluation, reference, described, interrupted, sheets) = match &args.bag {
        Some(bag) => {
            let (evaluation, reference, topics, interrupted, sheets) =
                run_bag(&engine, &args, bag, &params, reference.as_ref(), interrupt)?;
            let described = format!("bag {} ({})", bag.display(), topics.camera);
            (evaluation, reference, described, interrupted, sheets)
        }
        None => {
            let (evaluation, reference, interrupted, sheets) = run_split(
                &engine,
                &args,
                &args.split,
                &params,
                args.out.as_deref(),
                reference.as_ref(),
                interrupt,
            )?;
            let described = format!("{} ({})", args.split, data(&args).display());
            (evaluation, reference, described, interrupted, sheets)
        }
    };
    // A state of part of the data would merge as if it were the whole.
    if let (Some(path), Some(model_sha256), false) = (&args.state, model_sha256, interrupted) {
        let state = EvaluationState::new(
            evaluation.clone(),
            &model_dir,
            described.clone(),
            model_sha256,
        );
        state.save(path)?;
        println!("wrote the evaluation state to {}", path.display());
    }
    let mut report = evaluation.report();
    if let Some((reference, agreement)) = reference {
        report.agreement = Some(agreement.report());
        report.reference = Some(Box::new(reference.report()));
    }
    print_report(&report, &described);
    if interrupted {
        println!(
            "interrupted after {} frame(s): the figures above cover those only{}",
            report.images,
            match (&args.out, &args.state) {
                (None, None) => "",
                _ => "; --out and --state are not written",
            }
        );
        if let Some(path) = &args.json {
            write_report_json(path, &report, Ended::Interrupted)?;
        }
        return Ok(ExitCode::from(super::interrupt::EXIT_INTERRUPTED));
    }
    let damaged = !report.left_out.damage.is_empty();
    if let Some(dir) = &args.out {
        let mut written = write(dir, &evaluation, &engine, &model_dir, &described, sheets)?;
        if report.agreement.is_some() {
            let path = dir.join("agreement.json");
            let both = serde_json::json!({
                "agreement": report.agreement,
                "reference": report.reference,
            });
            write_file(&path, serde_json::to_string_pretty(&both)?.as_bytes())?;
            written.push(path);
        }
        tidy_report(dir, &written)?;
    }
    if let Some(path) = &args.json {
        let ended = if damaged {
            Ended::Damaged
        } else {
            Ended::Whole
        };
        write_report_json(path, &report, ended)?;
    }
    // As in bag process: frames skipped for bad input are counted and reported, an input
    // read only up to damage fails the run (exit 1) after its report is written.
    Ok(if damaged {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A reference engine's evaluation of the same frames, and the agreement of the maps.
type WithReference = Option<(Evaluation, Agreement)>;

/// The dataset root (clap requires `--data` unless `--merge` or `--bag`).
fn data(args: &EvalArgs) -> &Path {
    args.data
        .as_deref()
        .expect("clap requires --data without --merge or --bag")
}

/// `eval --bag`: the labelled frames of a bag (see `bag::labelled`), with a progress bar;
/// like [`run_split`], with a reference engine its evaluation and the agreement too.
fn run_bag<'a>(
    engine: &Engine,
    args: &'a EvalArgs,
    bag: &Path,
    params: &Params,
    reference: Option<&Engine>,
    interrupt: &AtomicBool,
) -> anyhow::Result<(Evaluation, WithReference, LabelledTopics, bool, Sheets<'a>)> {
    let reader = BagReader::open(bag)?;
    let topics = LabelledTopics::find(&reader, args.topic.as_deref())?;
    let frames = reader
        .info()?
        .topics
        .iter()
        .find(|t| t.name == topics.camera)
        .map_or(0, |t| t.message_count);
    let limit = (args.max_images > 0).then_some(args.max_images);
    let progress = Progress::new(limit.map_or(frames, |n| frames.min(n as u64)), "frames", "");
    let mut sheets = Sheets::new(args.out.as_deref(), args.sheets)?;
    let palette = engine.model().spec.palette();
    let engines: Vec<&Engine> = std::iter::once(engine).chain(reference).collect();
    let mut evaluator = Evaluator::new(&engines, args.max_depth);
    let mut agreement =
        reference.map(|r| Agreement::new(format!("mc, T = {}", r.config().mc_samples)));
    let (mut i, mut interrupted) = (0, false);
    let tally = read_labelled_frames(&reader, &topics, |frame| -> anyhow::Result<_> {
        // Interrupted: this frame and the rest are left out (a signal during the last
        // frame leaves nothing out, and the evaluation is whole).
        if interrupt.load(Ordering::SeqCst) {
            interrupted = true;
            return Ok(ControlFlow::Break(()));
        }
        let predictions = evaluator.add(&frame)?;
        if let (Some(agreement), [prediction, reference]) = (agreement.as_mut(), &predictions[..]) {
            agreement.add(prediction, reference);
        }
        sheets.add(i, || {
            contact_sheet(&frame.rgb, &predictions[0], &palette, &params.colormap)
        })?;
        i += 1;
        progress.inc();
        Ok(match limit {
            Some(n) if i >= n => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
    })?;
    progress.finish_and_clear();
    println!(
        "bag {}: {} camera frame(s){}, {} evaluated with their ground truth",
        bag.display(),
        tally.frames,
        match limit {
            Some(n) if i >= n => format!(" read (--max-images {n} reached)"),
            _ => String::new(),
        },
        tally.evaluated,
    );
    let mut evaluations = evaluator.finish();
    for evaluation in &mut evaluations {
        evaluation.left_out = tally.left_out.clone();
    }
    let reference = match reference {
        Some(_) => evaluations.pop(),
        None => None,
    };
    let evaluation = evaluations.pop().expect("the engine's own evaluation");
    Ok((
        evaluation,
        reference.zip(agreement),
        topics,
        interrupted,
        sheets,
    ))
}

/// `eval --merge`: the states of parts of the data as one evaluation.
fn run_merge(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let states = merged_states(args)?;
    let mut merged: Option<EvaluationState> = None;
    let (mut models, mut parts) = (Vec::new(), Vec::new());
    // The first state's model that has a fingerprint (earlier versions' states have none),
    // as (path, fingerprint): every other one with a fingerprint must have the same.
    let mut model: Option<(String, String)> = None;
    // Frames merged twice count twice: states with frame keys are checked frame by frame
    // against all before them (`frames`); for those of earlier versions, without keys,
    // the same data (root and split, or bag, as given) twice is the best that can be told.
    let mut evaluated_by: HashMap<String, (&PathBuf, bool)> = HashMap::new();
    let mut frames: HashSet<u64> = HashSet::new();
    for path in &states {
        let state = EvaluationState::load(path)?;
        let cannot = |why: String| anyhow::anyhow!("cannot merge {}: {why}", path.display());
        let keyless = state.evaluation.frame_keys.is_empty() && state.evaluation.images > 0;
        if let Some((earlier, earlier_keyless)) =
            evaluated_by.insert(state.data.clone(), (path, keyless))
        {
            if keyless || earlier_keyless {
                return Err(cannot(format!(
                    "{} evaluated {} already (its frames would count twice)",
                    earlier.display(),
                    state.data
                )));
            }
        }
        match (&model, &state.model_sha256) {
            (Some((first, a)), Some(b)) if a != b => {
                return Err(cannot(format!(
                    "another model: {} (sha256 {}…) against {first} (sha256 {}…)",
                    state.model,
                    &b[..12.min(b.len())],
                    &a[..12.min(a.len())]
                )));
            }
            (None, Some(b)) => model = Some((state.model.clone(), b.clone())),
            _ => {}
        }
        let keys = &state.evaluation.frame_keys;
        let shared = keys.iter().filter(|k| frames.contains(k)).count();
        if shared > 0 {
            return Err(cannot(format!(
                "{shared} of its {} frames are in the states before it already (the same \
                 frames): they would count twice",
                keys.len()
            )));
        }
        frames.extend(keys);
        if !models.contains(&state.model) {
            models.push(state.model.clone());
        }
        parts.push(state.data.clone());
        match merged.as_mut() {
            None => merged = Some(state),
            Some(m) => m.evaluation.merge(&state.evaluation).map_err(cannot)?,
        }
    }
    let mut merged = merged.expect("clap requires a state");
    // A fleet's merge has thousands of parts: the report names a few.
    merged.model = abridged(&models);
    merged.data = abridged(&parts);
    let report = merged.evaluation.report();
    let what = format!("{} state(s) merged", states.len());
    print_report(&report, &what);
    if let Some(dir) = &args.out {
        let provenance = Provenance {
            command: merge_command(&states),
            model: merged.model.clone(),
            split: merged.data.clone(),
            sheets: Vec::new(),
            machine: None,
            homoscedastic: false,
        };
        let written = write_report(dir, &merged.evaluation, &provenance)?;
        tidy_report(dir, &written)?;
        println!(
            "wrote {} files to {} (report.md)",
            written.len(),
            dir.display()
        );
    }
    // A merge succeeds whatever its parts' damage (which its report carries).
    if let Some(path) = &args.json {
        write_report_json(path, &report, Ended::Whole)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The state files to merge: `--merge`'s, or those `--merge-list` lists (one per line;
/// blank lines are skipped, a line's spaces are part of its path, a Windows line end is
/// not).
fn merged_states(args: &EvalArgs) -> anyhow::Result<Vec<PathBuf>> {
    let Some(list) = &args.merge_list else {
        return Ok(args.merge.clone());
    };
    let text = bayes_perception::text_file::read_limited(
        list,
        bayes_perception::text_file::MAX_LIST_BYTES,
    )
    .map_err(|e| anyhow::anyhow!("--merge-list {}: {e}", list.display()))?;
    let states: Vec<PathBuf> = text
        .lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(PathBuf::from)
        .collect();
    if states.is_empty() {
        anyhow::bail!("--merge-list {}: lists no state file", list.display());
    }
    Ok(states)
}

/// The items joined with commas; more than four as the first two, the last and how many
/// are left out.
fn abridged(items: &[String]) -> String {
    match items {
        [first, second, .., last] if items.len() > 4 => {
            format!("{first}, {second}, … ({} more), {last}", items.len() - 3)
        }
        _ => items.join(", "),
    }
}

/// This command line, with a long list of merged state files abridged.
fn merge_command(states: &[PathBuf]) -> String {
    let args = super::command_line(0);
    if states.len() <= 4 {
        return args.join(" ");
    }
    let listed: Vec<String> = states.iter().map(|p| p.display().to_string()).collect();
    let (first, last) = (&listed[0], &listed[listed.len() - 1]);
    let mut out = Vec::new();
    for arg in &args {
        if arg == first {
            out.push(format!("{first} … ({} more state files)", states.len() - 2));
        } else if arg == last || !listed.contains(arg) {
            out.push(arg.clone());
        }
    }
    out.join(" ")
}

/// The engine of an evaluation: as configured, keeping class probabilities for the NLL.
fn load(model_dir: &Path, params: &Params) -> anyhow::Result<Engine> {
    let config = EngineConfig {
        keep_probabilities: true,
        ..EngineConfig::from_params(params)?
    };
    Ok(Engine::load(model_dir, config)?)
}

/// Evaluates one split with a progress bar; contact sheets of the first frames go into
/// `sheets_dir`. With a `reference` engine every frame runs through it too: its own
/// evaluation and the agreement of the two predictions' maps come back with the first.
fn run_split<'a>(
    engine: &Engine,
    args: &EvalArgs,
    split: &str,
    params: &Params,
    sheets_dir: Option<&'a Path>,
    reference: Option<&Engine>,
    interrupt: &AtomicBool,
) -> anyhow::Result<(Evaluation, WithReference, bool, Sheets<'a>)> {
    let mut sheets = Sheets::new(sheets_dir, args.sheets)?;
    let progress = Progress::new(0, "images", &format!("{split}: "));
    let palette = engine.model().spec.palette();
    let mut agreement =
        reference.map(|r| Agreement::new(format!("mc, T = {}", r.config().mc_samples)));
    let engines: Vec<&Engine> = std::iter::once(engine).chain(reference).collect();
    let mut interrupted = false;
    let mut evaluations = evaluate_together(
        &engines,
        data(args),
        split,
        args.max_images,
        args.max_depth,
        |k, i, n, image, predictions| {
            progress.set(i as u64 + 1, n as u64);
            if let (Some(agreement), [prediction, reference]) = (agreement.as_mut(), predictions) {
                agreement.add(prediction, reference);
            }
            sheets.add(k, || {
                contact_sheet(image, &predictions[0], &palette, &params.colormap)
            })?;
            // Interrupted with images left: they are left out (after the last one,
            // the evaluation is whole).
            interrupted = i + 1 < n && interrupt.load(Ordering::SeqCst);
            Ok(if interrupted {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        },
    )?;
    progress.finish_and_clear();
    let reference = match reference {
        Some(_) => evaluations.pop(),
        None => None,
    };
    let evaluation = evaluations.pop().expect("the engine's own evaluation");
    Ok((evaluation, reference.zip(agreement), interrupted, sheets))
}

/// The contact sheets of the first frames of an evaluation, written into a temporary folder
/// in the report folder and moved beside the report once it is written ([`write`]): an
/// interrupted or failed run leaves an earlier report's sheets as they were.
struct Sheets<'a> {
    dir: Option<&'a Path>,
    count: usize,
    staged: Option<StagedDir>,
    /// Sheets 0..written are in the temporary folder.
    written: usize,
}

impl<'a> Sheets<'a> {
    /// `count` sheets for the report folder `dir` (created here), or none without one.
    fn new(dir: Option<&'a Path>, count: usize) -> anyhow::Result<Self> {
        let mut staged = None;
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            if count > 0 {
                let temp = StagedDir::new(&dir.join("sheets"))?;
                std::fs::create_dir(temp.path())
                    .with_context(|| format!("cannot create {}", temp.path().display()))?;
                staged = Some(temp);
            }
        }
        Ok(Sheets {
            dir,
            count,
            staged,
            written: 0,
        })
    }

    /// The sheet of the `k`-th frame evaluated, if it is one of the first `count`.
    fn add(
        &mut self,
        k: usize,
        sheet: impl FnOnce() -> image::RgbImage,
    ) -> bayes_perception::Result<()> {
        if let Some(staged) = self.staged.as_ref().filter(|_| k < self.count) {
            save_png(&staged.path().join(sheet_name(k)), &sheet())?;
            self.written = self.written.max(k + 1);
        }
        Ok(())
    }

    /// The file names of the sheets written.
    fn names(&self) -> Vec<String> {
        (0..self.written).map(sheet_name).collect()
    }

    /// Moves the sheets into the report folder (the temporary folder goes when dropped).
    fn install(self) -> anyhow::Result<()> {
        if let (Some(dir), Some(staged)) = (self.dir, &self.staged) {
            for name in (0..self.written).map(sheet_name) {
                let from = staged.path().join(&name);
                std::fs::rename(&from, dir.join(&name)).with_context(|| {
                    format!("cannot move {} into {}", from.display(), dir.display())
                })?;
            }
        }
        Ok(())
    }
}

fn sheet_name(i: usize) -> String {
    format!("frame_{i:03}.png")
}

/// Writes the report directory of one evaluation; returns every file of it.
fn write(
    dir: &Path,
    evaluation: &Evaluation,
    engine: &Engine,
    model_dir: &Path,
    described: &str,
    sheets: Sheets,
) -> anyhow::Result<Vec<PathBuf>> {
    let provenance = Provenance {
        command: super::command_line(0).join(" "),
        model: model_dir.display().to_string(),
        split: described.to_owned(),
        // This run's sheets only: an earlier report's further ones are not embedded.
        sheets: sheets.names(),
        machine: Some(machine_summary(engine.device())),
        homoscedastic: engine.model().spec.is_homoscedastic(),
    };
    let mut written = write_report(dir, evaluation, &provenance)?;
    sheets.install()?;
    written.extend(provenance.sheets.iter().map(|name| dir.join(name)));
    println!(
        "wrote {} files to {} (report.md)",
        written.len(),
        dir.display()
    );
    Ok(written)
}

/// [`tidy`] of a report folder, saying what it removed.
fn tidy_report(dir: &Path, written: &[PathBuf]) -> anyhow::Result<()> {
    let removed = tidy(dir, written)?;
    if removed > 0 {
        println!(
            "removed {removed} file(s) of the earlier report in {} that this one does not have",
            dir.display()
        );
    }
    Ok(())
}

fn run_compare(args: &EvalArgs, params: &Params, model_dir: &Path) -> anyhow::Result<ExitCode> {
    let out = args
        .out
        .as_deref()
        .expect("clap requires --out with --compare");
    let baseline_dir = args.baseline.as_deref().expect("clap requires --baseline");
    let spec =
        |dir: &Path| ModelSpec::load(dir).with_context(|| format!("cannot read {}", dir.display()));
    check_pair(&spec(model_dir)?, &spec(baseline_dir)?).map_err(|m| {
        anyhow::anyhow!(
            "cannot compare {} with {}: {m}",
            model_dir.display(),
            baseline_dir.display()
        )
    })?;
    let has_ood = data(args).join(&args.ood_split).is_dir();
    if !has_ood {
        println!(
            "no {} split in {}: the OOD columns stay empty",
            args.ood_split,
            data(args).display()
        );
    }
    let mut rows = Vec::new();
    let mut written = Vec::new();
    let mut machine = String::new();
    let mut left_out = LeftOut::default();
    for setup in &SETUPS {
        let dir = if setup.baseline {
            baseline_dir
        } else {
            model_dir
        };
        let mut setup_params = params.clone();
        setup_params.mode = setup.mode;
        let engine = load(dir, &setup_params)?;
        machine = machine_summary(engine.device());
        println!("{}: {} in {} mode", setup.name, dir.display(), setup.mode);
        let root = out.join(setup.key);
        let test_dir = root.join(&args.split);
        // Stopped at once by a signal (nothing graceful): a comparison of part of the
        // data is not one.
        let never = AtomicBool::new(false);
        let (test, _, _, sheets) = run_split(
            &engine,
            args,
            &args.split,
            &setup_params,
            Some(&test_dir),
            None,
            &never,
        )?;
        let described = format!("{} ({})", args.split, data(args).display());
        written.extend(write(&test_dir, &test, &engine, dir, &described, sheets)?);
        let ood = if has_ood {
            let ood_dir = root.join(&args.ood_split);
            let (ood, _, _, sheets) = run_split(
                &engine,
                args,
                &args.ood_split,
                &setup_params,
                Some(&ood_dir),
                None,
                &never,
            )?;
            let described = format!("{} ({})", args.ood_split, data(args).display());
            written.extend(write(&ood_dir, &ood, &engine, dir, &described, sheets)?);
            Some(ood.report())
        } else {
            None
        };
        if setup.key == SETUPS[0].key {
            // Every set-up reads the same files: one set-up's account is all of them.
            left_out = test.left_out.clone();
            if let Some(ood) = &ood {
                left_out.merge(&ood.left_out);
            }
        }
        rows.push(compare::row(
            setup,
            &dir.display().to_string(),
            &test.report(),
            ood.as_ref(),
        ));
    }
    let table = compare::markdown(&rows);
    println!("\n{table}");
    if !left_out.is_empty() {
        println!("not every frame is in these figures (see each set-up's report.md):");
        for line in left_out.lines() {
            println!("{line}");
        }
    }
    let md = out.join("compare.md");
    let command = super::command_line(0).join(" ");
    let text = format!(
        "# The paper's comparison on `{}`\n\nMade by:\n\n```sh\n{command}\n```\n\n\
             Timed on {}: ms per frame is the mean over the `{}` split, image in to every \
             output image, after one untimed frame.\n\n\
             Quality columns on the `{}` split, OOD AUROC on `{}`; error and OOD detection \
             by each set-up's total uncertainty (predictive entropy; depth std). For the \
             baseline, which has no variance heads, that is the softmax's entropy in one \
             pass and the entropy of the mean softmax in MC mode; its depth has no \
             uncertainty in one pass. Each uncertainty alone (epistemic's OOD AUROC, say) \
             is in each set-up's full report: `<set-up>/<split>/report.md`. The best value \
             of each column is in bold.{}\n\n{table}",
        data(args).display(),
        machine,
        args.split,
        args.split,
        args.ood_split,
        match args.max_depth {
            Some(m) => format!(" Depth is scored where the ground truth is nearer than {m} m."),
            None => String::new(),
        }
    );
    write_file(&md, text.as_bytes())?;
    let json = out.join("compare.json");
    write_file(&json, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    written.extend([md.clone(), json]);
    tidy_report(out, &written)?;
    println!("wrote {}", md.display());
    Ok(if left_out.damage.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &Report, split: &str) {
    println!("{split}: {}, {:.0} ms per frame", r.what(), r.ms_per_frame);
    for line in r.left_out.lines() {
        println!("{line}");
    }
    let header: Vec<String> = RECALLS
        .iter()
        .map(|r| format!("{:>5.0}%", r * 100.0))
        .collect();
    if let Some(s) = &r.semantic {
        println!(
            "semantic: mean IoU {:.3}, pixel accuracy {:.3}, NLL {}, ECE {}, calibration MSE {}",
            s.mean_iou,
            s.pixel_accuracy,
            format_value(s.nll, 3),
            format_value(s.ece, 4),
            format_value(s.calibration_mse, 5)
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
            "{}: rel {:.3}, rms {:.3} m, log10 {:.3}, delta < 1.25/1.25^2/1.25^3: {:.3}/{:.3}/{:.3}, NLL {}",
            r.depth_title(),
            d.rel,
            d.rms,
            d.log10,
            d.deltas[0],
            d.deltas[1],
            d.deltas[2],
            format_value(d.nll, 3)
        );
        for c in &d.coverage {
            println!(
                "  within ±{:.0} sigma: {:.3} (expected {:.3})",
                c.half_width_sigma, c.observed, c.expected
            );
        }
        if d.pixels_without_std > 0 {
            println!(
                "  {} pixel(s) with a std of 0 or not finite left out of NLL and coverage",
                d.pixels_without_std
            );
        }
        if let Some([noisy, clean]) = d.noise_patch_rel {
            println!("  depth rel on noise patches {noisy:.3}, clean pixels {clean:.3}");
        }
        print_uncertainties(&d.uncertainties, "RMS (m)", &header);
    }
    if let Some(agreement) = &r.agreement {
        print_agreement(agreement, &r.mode);
    }
    if let Some(reference) = &r.reference {
        println!("\nthe reference on the same frames:");
        print_report(reference, split);
    }
}

fn print_agreement(agreement: &AgreementReport, mode: &str) {
    println!(
        "agreement of the {mode} maps with {} (Spearman's rho per pixel):",
        agreement.reference
    );
    for m in &agreement.maps {
        println!(
            "  {:<38} pooled {:.3}; per frame mean {}, min {} ({} frame(s))",
            m.map,
            m.spearman_pooled,
            format_value(m.spearman_frame_mean, 3),
            format_value(m.spearman_frame_min, 3),
            m.frames
        );
    }
}

fn print_uncertainties(list: &[UncertaintyQuality], score: &str, header: &[String]) {
    for u in list {
        println!(
            "  {:<10} error AUROC {}, AP {}; OOD AUROC {}; noise/clean {}; OOD/in-dist. {}",
            u.uncertainty,
            format_value(u.error_auroc, 3),
            format_value(u.error_average_precision, 3),
            format_value(u.ood_auroc, 3),
            format_ratio(u.noise_ratio),
            format_ratio(u.ood_ratio)
        );
    }
    println!("  {score} of the least uncertain:  {}", header.join(" "));
    for u in list {
        if let Some(kept) = &u.kept {
            let cells: Vec<String> = kept.iter().map(|v| format!("{v:>6.3}")).collect();
            let shape = match u.kept_monotone {
                Some(true) => "monotone",
                _ => "NOT monotone",
            };
            println!(
                "    by {:<10}              {}  ({shape})",
                u.uncertainty,
                cells.join(" ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::abridged;

    #[test]
    fn long_lists_of_merged_parts_are_abridged() {
        let parts = |n: usize| (1..=n).map(|i| format!("bag{i}")).collect::<Vec<_>>();
        assert_eq!(abridged(&parts(1)), "bag1");
        assert_eq!(abridged(&parts(4)), "bag1, bag2, bag3, bag4");
        assert_eq!(abridged(&parts(1000)), "bag1, bag2, … (997 more), bag1000");
    }
}
