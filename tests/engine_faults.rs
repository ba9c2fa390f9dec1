//! The engine when libtorch fails (feature `failpoints`): an MC chunk that runs out of
//! memory is halved and retried, the frame still gets all T passes and the smaller chunk
//! is kept; a pass that cannot be made smaller is an error for that frame. Its own test
//! binary, because fail points are process-wide.
#![cfg(feature = "failpoints")]

mod common;

use bayes_perception::config::Mode;
use bayes_perception::engine::{Engine, EngineConfig};
use bayes_perception::Error;

fn mc_engine(batch: usize) -> Engine {
    let config = EngineConfig {
        mode: Mode::Mc,
        mc_samples: 8,
        mc_batch_size: Some(batch),
        seed: Some(11),
        device: "cpu".parse().unwrap(),
        ..EngineConfig::default()
    };
    // The same weights for every engine (model init draws from the global generator).
    tch::manual_seed(5);
    Engine::new(common::tiny_model(3, true), config).unwrap()
}

#[test]
fn out_of_memory_in_an_mc_chunk_halves_it_and_the_frame_gets_every_pass() {
    let _lock = common::rng_lock();
    let image = common::pattern(40, 30);
    // What chunks of 2 give, with no failure.
    let expected = mc_engine(2).predict(&image).unwrap();

    // Chunks of more than 2 passes run out of memory: 8 -> 4 -> 2.
    fail::cfg("engine::mc_chunk", "return(2)").unwrap();
    let engine = mc_engine(8);
    let got = engine.predict(&image);
    let again = engine.predict(&image);
    fail::remove("engine::mc_chunk");
    let got = got.unwrap();
    assert_eq!(got.samples, 8);
    assert_eq!(engine.mc_batch_size(), 2, "the smaller chunk is kept");
    // The same passes as chunks of 2 from the start: the failed attempts drew nothing.
    let (s, e) = (got.semantic.unwrap(), expected.semantic.unwrap());
    assert_eq!(s.labels, e.labels);
    assert_eq!(
        s.epistemic_mutual_information,
        e.epistemic_mutual_information
    );
    let (d, de) = (got.depth.unwrap(), expected.depth.unwrap());
    assert_eq!(d.epistemic_std_m, de.epistemic_std_m);
    assert_eq!(again.unwrap().samples, 8);
}

#[test]
fn out_of_memory_in_a_single_pass_is_an_error_for_that_frame() {
    let _lock = common::rng_lock();
    fail::cfg("engine::mc_chunk", "return(0)").unwrap();
    let engine = mc_engine(4);
    let failed = engine.predict(&common::pattern(40, 30));
    fail::remove("engine::mc_chunk");
    match failed {
        Err(Error::Inference(message)) => {
            assert!(message.contains("can't allocate memory"), "{message}")
        }
        other => panic!("expected an out-of-memory error, got {other:?}"),
    }
    assert_eq!(engine.mc_batch_size(), 1);
    // Memory is back: the next frame runs in chunks of 1.
    assert_eq!(engine.predict(&common::pattern(40, 30)).unwrap().samples, 8);
}

/// `bag process` of a bag whose frames the engine fails on: the output is still written,
/// the summary counts the failures by reason, and the exit code says whether another try
/// may pass (75 for out of memory) or not (1).
#[test]
fn bag_process_reports_failed_frames_and_whether_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common::tiny_model(3, true).save(&model).unwrap();
    let input = dir.path().join("input");
    let status = common::bin()
        .args(["bag", "sample"])
        .arg(&input)
        .args(["--frames", "3", "--width", "40", "--height", "30"])
        .status()
        .unwrap();
    assert!(status.success());
    let run = |name: &str, failpoint: &str, extra: &[&str]| {
        let json = dir.path().join(format!("{name}.json"));
        let out = common::bin()
            .args(["bag", "process"])
            .arg(&input)
            .arg(dir.path().join(name))
            .arg("--model")
            .arg(&model)
            .args(["--device", "cpu", "--json"])
            .arg(&json)
            .args(extra)
            .env("FAILPOINTS", failpoint)
            .output()
            .unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (out.status.code(), summary)
    };
    // Every frame fails with a libtorch error that is not memory: give up (1).
    let (code, summary) = run("broken", "engine::forward=return(40x30)", &[]);
    assert_eq!(code, Some(1));
    assert_eq!(summary["status"], "frames failed");
    assert_eq!(
        (
            summary["processed"].as_u64(),
            summary["camera_frames_read"].as_u64()
        ),
        (Some(0), Some(3))
    );
    let failed: u64 = summary["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(failed, 3);
    assert!(
        dir.path().join("broken/metadata.yaml").is_file(),
        "the output is still a bag"
    );
    // Out of memory in a single MC pass: a temporary failure, worth another try (75).
    let (code, summary) = run(
        "oom",
        "engine::mc_chunk=return(0)",
        &["--mode", "mc", "--samples", "2", "--batch-size", "1"],
    );
    assert_eq!(code, Some(75));
    assert_eq!(
        (summary["status"].as_str(), summary["exit_code"].as_u64()),
        (Some("retry"), Some(75))
    );
    // And a clean run: ok, 0, every frame processed.
    let (code, summary) = run("clean", "", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        (summary["status"].as_str(), summary["processed"].as_u64()),
        (Some("ok"), Some(3))
    );
    assert!(summary["output_bytes"].as_u64().unwrap() > 0);
}
