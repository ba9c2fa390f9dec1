//! `bag process` killed or starved of disk: OUTPUT is either absent or a complete bag
//! whose metadata counts match its messages — never a directory that looks complete and
//! is not. scripts/kill_writer.py does the same at 20 random points, checked with rosbags
//! and mcap as independent readers.

mod common;

use std::ops::ControlFlow;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bayes_perception::bag::BagReader;

use common::bin;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A tiny model and a 300-frame sample bag.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        common::tiny_model(4, true)
            .save(&dir.path().join("model"))
            .unwrap();
        let status = bin()
            .args(["bag", "sample"])
            .arg(dir.path().join("input"))
            .args(["--frames", "300", "--width", "64", "--height", "48"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn process(&self, output: &str) -> Command {
        let mut cmd = bin();
        cmd.args(["bag", "process"])
            .arg(self.path("input"))
            .arg(self.path(output))
            .arg("--model")
            .arg(self.path("model"))
            // Seeded, one libtorch thread: two runs write the same bytes (the salvaged
            // part of a killed run is compared with a whole run).
            .args(["--device", "cpu", "--seed", "1"])
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// The `.NAME.partial-*` directories next to the outputs.
    fn partials(&self, name: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!(".{name}.partial-")))
            })
            .collect()
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mcap_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mcap"))
        .collect();
    // By the number after the last `_`: `_10` after `_9`.
    files.sort_by_key(|p| bayes_perception::bag::storage_file_number(p));
    files
}

/// A complete bag: it opens, every message reads, and metadata.yaml's counts (total and
/// per topic) match the messages in the file.
fn assert_complete(output: &Path) {
    let reader = BagReader::open(output).unwrap();
    let info = reader.info().unwrap();
    let mut per_topic = std::collections::BTreeMap::<String, u64>::new();
    reader
        .read(|m| {
            *per_topic.entry(m.topic.to_owned()).or_default() += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    let metadata = std::fs::read_to_string(output.join("metadata.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&metadata).unwrap();
    let meta = &doc["rosbag2_bagfile_information"];
    assert_eq!(
        meta["message_count"].as_u64().unwrap(),
        per_topic.values().sum::<u64>()
    );
    for topic in meta["topics_with_message_count"].as_sequence().unwrap() {
        let name = topic["topic_metadata"]["name"].as_str().unwrap();
        assert_eq!(
            topic["message_count"].as_u64().unwrap(),
            per_topic.get(name).copied().unwrap_or(0),
            "{name}"
        );
    }
    assert!(info.message_count > 0);
}

#[test]
fn killed_writer_leaves_no_output_or_a_complete_one_and_the_next_run_cleans_up() {
    let f = Fixture::new();
    // Kill points: the moment the partial bag first holds data, and later ones by size (a
    // whole run writes about 11 MiB). Chunks end after 1 MiB of messages, compressed to
    // less: past 1.5 MB in the file, one has ended. The second run has a --duration, which
    // the --start its salvage suggests must keep (the window ends where it ended). The
    // last two runs split their output
    // into storage files of 300 kB, so that the kill leaves a dozen or so (`_10` comes
    // after `_9`, and the salvage must copy them in that order); in the last, the first
    // file is then damaged (as a disk might: a kill does not), and nothing is copied.
    let split: &[&str] = &["--max-bag-size", "300000"];
    let cases = [
        (1u64, &[][..], false),
        (1_500_000, &["--duration", "20"][..], false),
        (4_000_000, split, false),
        (4_000_000, split, true),
    ];
    for (i, (threshold, extra, damage)) in cases.into_iter().enumerate() {
        let name = format!("out{i}");
        let mut child = common::Logged::spawn(f.process(&name).args(extra));
        let reached =
            child.wait_for(|| f.partials(&name).iter().any(|p| dir_bytes(p) >= threshold));
        child.kill(); // SIGKILL
        let output = f.path(&name);
        assert!(
            reached || threshold == 1,
            "the run ended before {threshold} bytes"
        );
        // The log times of the messages readable in the killed run's storage files.
        let mut readable = Vec::new();
        if reached {
            assert!(!output.exists(), "killed mid-run, yet {name} exists");
            let partials = f.partials(&name);
            assert!(
                !partials.is_empty(),
                "the partial directory is kept for inspection"
            );
            let files = mcap_files(&partials[0]);
            if extra.contains(&"--max-bag-size") {
                assert!(files.len() >= 11, "{files:?}");
            }
            readable = files.iter().flat_map(|f| readable_log_times(f)).collect();
            if damage {
                let first = &files[0];
                let bytes = std::fs::read(first).unwrap();
                std::fs::write(first, &bytes[..bytes.len() / 2]).unwrap();
            }
        } else {
            // Finished before the kill point: then it must be whole.
            assert_complete(&output);
        }
        // The next run to the same OUTPUT keeps what the killed one had written as a
        // complete bag beside it, removes its temporary directory, and completes.
        let out = f.process(&name).args(extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_complete(&output);
        assert!(
            f.partials(&name).is_empty(),
            "stale partial directories remain"
        );
        let salvaged = f.path(&format!("{name}.salvaged"));
        if damage {
            // Kept whole, out of the way, and said so; nothing copied.
            let aside = f.path(&format!("{name}.unsalvaged"));
            assert!(
                stderr.contains("was not copied")
                    && stderr.contains(&format!("kept as {}", aside.display())),
                "{stderr}"
            );
            assert!(mcap_files(&aside).len() >= 11);
            assert!(!salvaged.exists());
            continue;
        }
        if reached && threshold >= 1_500_000 {
            // A chunk ended: whole frames' outputs were in the file.
            assert!(salvaged.is_dir(), "nothing salvaged: {stderr}");
            assert!(
                stderr.contains(&format!("kept as {}", salvaged.display()))
                    && stderr.contains("`--start "),
                "{stderr}"
            );
        }
        if salvaged.exists() {
            assert_complete(&salvaged);
            // Every readable message of every storage file was copied but those logged at
            // the latest time (left to the rest: some may be in a chunk the kill cut).
            let kept = BagReader::open(&salvaged)
                .unwrap()
                .info()
                .unwrap()
                .message_count;
            let latest = readable.iter().max().copied().unwrap();
            let before = readable.iter().filter(|&&t| t < latest).count() as u64;
            assert_eq!(kept, before);
            assert_prefix_of(&salvaged, &output);
            // It says how the killed run made it, and what of it this is.
            // (Beside it, rosbag2's own record, which every finished storage file ends
            // with.)
            let ours = |bag: &Path| {
                let records = BagReader::open(bag).unwrap().metadata_records();
                let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
                assert_eq!(names, ["bayes_perception", "rosbag2"]);
                records
            };
            let (records, whole) = (ours(&salvaged), ours(&output));
            let mut said = records[0].entries.clone();
            let what = said.remove("salvaged").unwrap();
            assert_eq!(
                what,
                format!(
                    "what a killed run had written: its messages logged before {latest} ns \
                     since the epoch"
                )
            );
            assert_eq!(said, whole[0].entries);
            // The options it suggests (--start, and the window's --duration) process
            // exactly the messages after the salvaged ones, topic by topic.
            let start = stderr
                .split("`--start ")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .unwrap_or_else(|| panic!("no --start in: {stderr}"));
            assert_eq!(
                start.contains(" --duration "),
                extra.contains(&"--duration"),
                "{start}"
            );
            let rest = format!("{name}.rest");
            let out = f
                .process(&rest)
                .arg("--start")
                .args(start.split_whitespace())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let topics = BagReader::open(&output).unwrap().info().unwrap().topics;
            assert!(topics.len() >= 10);
            for topic in topics {
                let mut joined = log_times(&salvaged, &topic.name);
                joined.extend(log_times(&f.path(&rest), &topic.name));
                assert_eq!(
                    joined,
                    log_times(&output, &topic.name),
                    "--start {start}: a message of {} twice or none",
                    topic.name
                );
            }
        }
    }
}

/// The log times of the messages of one MCAP file read before the end or its first damage.
fn readable_log_times(file: &Path) -> Vec<u64> {
    let mut times = Vec::new();
    if let Ok(reader) = BagReader::open(file) {
        let _ = reader.read(|m| {
            times.push(m.log_time);
            ControlFlow::Continue(())
        });
    }
    times
}

/// A killed run whose file ends with a chunk that holds some of the messages logged at one
/// time (a camera_info) while the chunk with the others (the image of that time, copied
/// as a frame not sampled with --every) was cut by the kill: the salvage keeps neither,
/// and the --start it suggests takes both (it suggested the nanosecond after, which took
/// neither).
#[test]
fn messages_of_one_time_split_by_the_kill_are_all_left_to_the_rest() {
    let f = Fixture::new();
    let input = f.path("input");
    let (start_ns, messages) = input_messages(&input);
    // The sixth pair of messages of one log time (a frame and its camera_info).
    let cut = messages
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].2 == w[1].2)
        .nth(5)
        .map(|(i, _)| i)
        .expect("messages logged at the same time");
    let time = messages[cut].2;
    // The killed run's directory: its mark, and its file cut after the first of the pair.
    let (partial, mut writer) = killed_run(&f, "cut", start_ns);
    for (topic, type_name, log_time, data) in &messages[..=cut] {
        writer.write(topic, type_name, *log_time, data).unwrap();
    }
    writer.flush().unwrap();
    let file = partial.join("cut_0.mcap");
    let complete = std::fs::metadata(&file).unwrap().len();
    let (topic, type_name, log_time, data) = &messages[cut + 1];
    writer.write(topic, type_name, *log_time, data).unwrap();
    as_killed(&partial, writer);
    // The kill: the second chunk and the summary never reached the file.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..complete as usize]).unwrap();

    let stderr = next_run(&f, "cut");
    let salvaged = f.path("cut.salvaged");
    let kept: Vec<u64> = ["/camera/image_raw", "/camera/camera_info"]
        .iter()
        .flat_map(|topic| log_times(&salvaged, topic))
        .collect();
    assert_eq!(kept.len(), cut, "all the messages before the pair");
    assert!(kept.iter().all(|&t| t < time), "{kept:?}");
    let ns = time - start_ns;
    let start = format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    assert!(
        stderr.contains(&format!("`--start {start}` processes the rest")),
        "{stderr}"
    );
    // That --start takes both messages of the pair.
    let rest = f
        .process("rest")
        .args(["--start", &start])
        .output()
        .unwrap();
    assert!(rest.status.success());
    for topic in ["/camera/image_raw", "/camera/camera_info"] {
        assert_eq!(
            log_times(&f.path("rest"), topic).first(),
            Some(&time),
            "{topic}"
        );
    }
}

/// Killed after the bag was finished and before it was renamed into place: the next run
/// keeps it whole beside its own output (it was taken for a killed run's scratch and
/// removed, since the run's mark went before the rename).
#[cfg(feature = "failpoints")]
#[test]
fn a_bag_finished_but_not_yet_in_place_when_killed_is_kept() {
    let f = Fixture::new();
    let out = f
        .process("done")
        .env("FAILPOINTS", "bag::install=return")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!f.path("done").exists());
    assert_eq!(f.partials("done").len(), 1);
    let out = f.process("done").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let salvaged = f.path("done.salvaged");
    assert!(salvaged.is_dir(), "the finished bag was not kept: {stderr}");
    assert!(
        stderr.contains("the run had finished it: nothing is left to process")
            && !stderr.contains("--start"),
        "{stderr}"
    );
    assert_complete(&salvaged);
    let frames = |bag: &Path| log_times(bag, "/camera/image_raw");
    assert_eq!(frames(&salvaged), frames(&f.path("done")));
    assert!(!f.path("done").join("bag_process_run.yaml").exists());
    assert!(f.partials("done").is_empty());
}

/// The bag's start and its messages, in storage order.
fn input_messages(bag: &Path) -> (u64, Vec<common::StoredMessage>) {
    let start_ns = BagReader::open(bag).unwrap().info().unwrap().start_ns;
    (start_ns, common::bag_messages(bag))
}

/// What a run towards OUTPUT `name` killed before it had done anything left, as the next
/// run finds it: its temporary directory (of this host and a process that has ended) with
/// a writer in it and its mark (the fixture's input, no window). The caller writes the
/// files as the killed run had.
fn killed_run(
    f: &Fixture,
    name: &str,
    start_ns: u64,
) -> (PathBuf, bayes_perception::bag::BagWriter) {
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let partial = f.path(&format!(
        ".{name}.partial-{}-{pid}",
        bayes_perception::process::host_name()
    ));
    let writer = bayes_perception::bag::BagWriter::create_named(&partial, name).unwrap();
    std::fs::write(
        partial.join("bag_process_run.yaml"),
        format!(
            "input: {}\ninput_start_ns: {start_ns}\n",
            std::path::absolute(f.path("input")).unwrap().display()
        ),
    )
    .unwrap();
    (partial, writer)
}

/// Leaves what [`killed_run`] began as a kill does once its files are written: without
/// metadata.yaml (the mark of a finished bag).
fn as_killed(partial: &Path, writer: bayes_perception::bag::BagWriter) {
    writer.finish().unwrap();
    std::fs::remove_file(partial.join("metadata.yaml")).unwrap();
}

/// The next run to OUTPUT `name`, which salvages what a killed one left: it completes; what
/// it said.
fn next_run(f: &Fixture, name: &str) -> String {
    let out = f.process(name).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// A killed run's storage files with one missing (numbered 0 and 2) are set aside, not
/// copied with a gap; one whose messages are not in log-time order (an input stored out of
/// order) is salvaged, but no --start is suggested: none divides what it did from the rest;
/// one with nothing whole to keep is said and removed.
#[test]
fn a_missing_storage_file_is_set_aside_and_an_unordered_run_gets_no_start() {
    let f = Fixture::new();
    let (start_ns, messages) = input_messages(&f.path("input"));
    // Three files of a group each, the middle one then gone.
    let (partial, mut writer) = killed_run(&f, "gap", start_ns);
    writer.set_max_file_bytes(Some(1));
    for (topic, type_name, log_time, data) in &messages[..3] {
        writer.hold_chunk();
        writer.write(topic, type_name, *log_time, data).unwrap();
        writer.end_group().unwrap();
    }
    as_killed(&partial, writer);
    assert_eq!(mcap_files(&partial).len(), 3);
    std::fs::remove_file(partial.join("gap_1.mcap")).unwrap();
    let stderr = next_run(&f, "gap");
    assert!(
        stderr.contains("was not copied: its storage file numbered 1 is missing (2 found)"),
        "{stderr}"
    );
    assert_eq!(mcap_files(&f.path("gap.unsalvaged")).len(), 2);
    assert!(!f.path("gap.salvaged").exists());

    // Out of order: a message logged later written before one logged earlier.
    let later = |after: usize| {
        (after..messages.len())
            .find(|&k| messages[k].2 > messages[after].2)
            .unwrap()
    };
    let (a, b) = (0, later(0));
    let (partial, mut writer) = killed_run(&f, "unordered", start_ns);
    for k in [b, a, later(b)] {
        let (topic, type_name, log_time, data) = &messages[k];
        writer.write(topic, type_name, *log_time, data).unwrap();
    }
    as_killed(&partial, writer);
    let stderr = next_run(&f, "unordered");
    assert!(
        stderr.contains("its messages are not in log-time order") && !stderr.contains("`--start"),
        "{stderr}"
    );
    assert!(f.path("unordered.salvaged").is_dir());

    // Only messages of one log time written (the first frame and its camera_info): nothing
    // whole to keep, said, and the killed run's directory goes.
    let (partial, mut writer) = killed_run(&f, "first", start_ns);
    for (topic, type_name, log_time, data) in &messages[..later(0)] {
        writer.write(topic, type_name, *log_time, data).unwrap();
    }
    as_killed(&partial, writer);
    let stderr = next_run(&f, "first");
    assert!(
        stderr.contains("had written nothing whole to keep"),
        "{stderr}"
    );
    assert!(!partial.exists() && !f.path("first.salvaged").exists());
}

/// A killed run that copied another topic (`--copy /tf_static`): its salvage keeps the
/// topic as recorded (its message definition, its latched QoS, the publish time), where
/// the salvage once knew only our own types and stopped at the first such message.
#[test]
fn a_salvage_keeps_copied_topics_as_recorded() {
    use bayes_perception::bag::{BagMessage, Recorded};
    let f = Fixture::new();
    let (start_ns, messages) = input_messages(&f.path("input"));
    let (partial, mut writer) = killed_run(&f, "copies", start_ns);
    let tf = std::sync::Arc::new(Recorded {
        definition: Some((
            "ros2msg".into(),
            b"geometry_msgs/TransformStamped[] transforms\n".to_vec(),
        )),
        offered_qos_profiles: "- durability: 1\n  reliability: 1".into(),
    });
    writer
        .copy(&BagMessage {
            topic: "/tf_static",
            type_name: "tf2_msgs/msg/TFMessage",
            log_time: start_ns,
            publish_time: start_ns - 5,
            data: &[0, 1, 0, 0, 7],
            recorded: &tf,
            unreadable: None,
        })
        .unwrap();
    for (topic, type_name, log_time, data) in &messages[..6] {
        writer.write(topic, type_name, *log_time, data).unwrap();
    }
    as_killed(&partial, writer);
    let stderr = next_run(&f, "copies");
    assert!(f.path("copies.salvaged").is_dir(), "{stderr}");
    let mut kept = Vec::new();
    BagReader::open(&f.path("copies.salvaged"))
        .unwrap()
        .read(|m| {
            if m.topic == "/tf_static" {
                kept.push((m.publish_time, m.data.to_vec(), (**m.recorded).clone()));
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(kept.len(), 1, "{stderr}");
    assert_eq!(
        (kept[0].0, &kept[0].1[..]),
        (start_ns - 5, &[0u8, 1, 0, 0, 7][..])
    );
    assert_eq!(kept[0].2, *tf, "its definition and QoS profiles");
    assert!(kept[0].2.is_latched());
}

/// The log times of `topic`'s messages in `bag`, in order.
fn log_times(bag: &Path, topic: &str) -> Vec<u64> {
    let mut times = Vec::new();
    BagReader::open(bag)
        .unwrap()
        .read(|m| {
            if m.topic == topic {
                times.push(m.log_time);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    times
}

/// Every topic of `part` holds the first messages of the same topic in `whole`, byte for
/// byte (a run killed partway wrote the beginning of what a whole run writes).
fn assert_prefix_of(part: &Path, whole: &Path) {
    let messages = |bag: &Path| {
        let mut per_topic = std::collections::BTreeMap::<String, Vec<(u64, Vec<u8>)>>::new();
        BagReader::open(bag)
            .unwrap()
            .read(|m| {
                per_topic
                    .entry(m.topic.to_owned())
                    .or_default()
                    .push((m.log_time, m.data.to_vec()));
                ControlFlow::Continue(())
            })
            .unwrap();
        per_topic
    };
    let (part, whole) = (messages(part), messages(whole));
    for (topic, kept) in &part {
        let all = &whole[topic];
        assert!(kept.len() <= all.len(), "{topic}");
        assert!(
            kept[..] == all[..kept.len()],
            "{topic}: not the whole run's first messages"
        );
    }
}

#[test]
fn disk_full_is_a_clear_error_with_no_output() {
    let f = Fixture::new();
    let mut cmd = f.process("full");
    // 150 kB of file size allowed: the bag outgrows it after a few frames.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 150_000,
                rlim_max: 150_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A temporary failure (EX_TEMPFAIL): another try, with room, may succeed.
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(!f.path("full").exists(), "an output after a failed write");
    assert!(
        f.partials("full").is_empty(),
        "the partial bag is removed on error"
    );
}
