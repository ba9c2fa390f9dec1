//! The project's bag writer and reader against each other, and the reader's failure modes.

mod common;

use std::ops::ControlFlow;

use bayes_perception::bag::cdr::CdrMessage;
use bayes_perception::bag::{BagError, BagMessage, BagReader, BagWriter, Storage};
use bayes_perception::msg::{Header, Image, Time};

fn image(i: u32) -> Image {
    Image {
        header: Header {
            stamp: Time {
                sec: 100 + i as i32,
                nanosec: 7 * i,
            },
            frame_id: "cam".into(),
        },
        height: 2,
        width: 3,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 9,
        data: (0..18).map(|v| (v + i) as u8).collect(),
    }
}

fn write_bag(dir: &std::path::Path, frames: u32) {
    let mut w = BagWriter::create(dir).unwrap();
    for i in 0..frames {
        w.write(
            "/camera/image_raw",
            "sensor_msgs/msg/Image",
            1_000 + i as u64 * 100,
            &image(i).to_cdr(),
        )
        .unwrap();
    }
    let summary = w.finish().unwrap();
    assert_eq!(summary.message_count, frames as u64);
}

/// (topic, type, log time, decoded image) of every message read.
type Read = Vec<(String, String, u64, Image)>;

fn read_all(reader: &BagReader) -> (Read, Result<(), BagError>) {
    let mut out = Vec::new();
    let result = reader.read(|m| {
        out.push((
            m.topic.to_owned(),
            m.type_name.to_owned(),
            m.log_time,
            Image::from_cdr(m.data).unwrap(),
        ));
        ControlFlow::Continue(())
    });
    (out, result)
}

#[test]
fn write_then_read_back_dir_and_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run1");
    write_bag(&dir, 5);
    let reader = BagReader::open(&dir).unwrap();
    assert_eq!(reader.storage(), Storage::Mcap);
    let info = reader.info().unwrap();
    assert_eq!(info.message_count, 5);
    assert_eq!(info.topics.len(), 1);
    assert_eq!(
        (
            info.topics[0].name.as_str(),
            info.topics[0].type_name.as_str()
        ),
        ("/camera/image_raw", "sensor_msgs/msg/Image")
    );
    assert_eq!((info.start_ns, info.duration_ns), (1_000, 400));
    let (messages, result) = read_all(&reader);
    result.unwrap();
    assert_eq!(messages.len(), 5);
    for (i, (topic, type_name, log_time, msg)) in messages.into_iter().enumerate() {
        assert_eq!(
            (topic.as_str(), type_name.as_str()),
            ("/camera/image_raw", "sensor_msgs/msg/Image")
        );
        assert_eq!(log_time, 1_000 + i as u64 * 100);
        assert_eq!(msg, image(i as u32));
    }
    // The .mcap file alone reads the same, with info from the file's summary.
    let single = BagReader::open(&dir.join("run1_0.mcap")).unwrap();
    let single_info = single.info().unwrap();
    assert_eq!(
        (
            single_info.message_count,
            single_info.start_ns,
            single_info.duration_ns
        ),
        (5, 1_000, 400)
    );
    assert_eq!(single_info.topics, info.topics);
    // Stated by the summary, not counted by reading: the messages' chunk damaged, the
    // summary whole, info says what the summary says (as it says what metadata.yaml
    // says) and reading finds the damage.
    let mut bytes = std::fs::read(dir.join("run1_0.mcap")).unwrap();
    let damaged = tmp.path().join("damaged.mcap");
    let middle = bytes.len() / 3;
    bytes[middle..middle + 16].fill(0xAB);
    std::fs::write(&damaged, &bytes).unwrap();
    let reader = BagReader::open(&damaged).unwrap();
    let stated = reader.info().unwrap();
    assert_eq!((stated.message_count, stated.damage), (5, None));
    assert!(
        read_all(&reader).1.is_err(),
        "the damage not found by reading"
    );
    // A visitor can stop early.
    let mut seen = 0;
    single
        .read(|_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(seen, 2);
}

#[test]
fn truncated_mcap_reads_what_is_there_then_reports_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("full");
    write_bag(&dir, 40);
    let bytes = std::fs::read(dir.join("full_0.mcap")).unwrap();
    let cut = tmp.path().join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (messages, result) = read_all(&BagReader::open(&cut).unwrap());
    let err = result.unwrap_err();
    assert!(
        matches!(err, BagError::Corrupt { messages_read, .. } if messages_read == messages.len() as u64),
        "{err}"
    );
    assert!(err.to_string().contains("reading stopped after"), "{err}");
    // Every message before the damage was delivered intact and in order.
    for (i, (_, _, _, msg)) in messages.iter().enumerate() {
        assert_eq!(*msg, image(i as u32));
    }
}

#[test]
fn bad_paths_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = BagReader::open(&tmp.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let e = BagReader::open(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("no metadata.yaml"), "{e}");
    let txt = tmp.path().join("notes.txt");
    std::fs::write(&txt, "hi").unwrap();
    assert!(BagReader::open(&txt)
        .unwrap_err()
        .to_string()
        .contains("not a bag"));
    let dir = tmp.path().join("b");
    write_bag(&dir, 1);
    std::fs::remove_file(dir.join("b_0.mcap")).unwrap();
    let e = BagReader::open(&dir).unwrap_err().to_string();
    assert!(e.contains("b_0.mcap") && e.contains("missing"), "{e}");
    // Writing over an existing directory is refused.
    assert!(BagWriter::create(&dir).is_err());
}

/// Metadata versions 1 to 3 list `bag/bag_0.mcap` (the directory's name first), which
/// rosbag2 resolves against the parent; a bag renamed since is read by the file's name.
#[test]
fn storage_paths_of_old_metadata_versions_and_renamed_bags_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    write_bag(&dir, 3);
    let metadata = dir.join("metadata.yaml");
    let text = std::fs::read_to_string(&metadata).unwrap();
    let version = text
        .lines()
        .find(|l| l.trim_start().starts_with("version:"))
        .unwrap()
        .to_owned();
    let old = text
        .replace(&version, "  version: 3")
        .replace("- old_0.mcap", "- old/old_0.mcap");
    assert_ne!(old, text);
    std::fs::write(&metadata, &old).unwrap();
    let read = |dir: &std::path::Path| read_all(&BagReader::open(dir).unwrap()).0.len();
    assert_eq!(read(&dir), 3);
    let renamed = tmp.path().join("renamed");
    std::fs::rename(&dir, &renamed).unwrap();
    assert_eq!(read(&renamed), 3);
    // Version 3 resolving into a folder of the bag: only the parent-relative rule finds
    // `renamed/sub/old_0.mcap` (no old_0.mcap lies in the directory itself).
    std::fs::create_dir(renamed.join("sub")).unwrap();
    std::fs::rename(renamed.join("old_0.mcap"), renamed.join("sub/old_0.mcap")).unwrap();
    std::fs::write(
        renamed.join("metadata.yaml"),
        old.replace("- old/old_0.mcap", "- renamed/sub/old_0.mcap"),
    )
    .unwrap();
    assert_eq!(read(&renamed), 3, "relative to the parent");
    std::fs::rename(renamed.join("sub/old_0.mcap"), renamed.join("old_0.mcap")).unwrap();
    // Version 4 and later: relative to the directory itself.
    std::fs::write(
        renamed.join("metadata.yaml"),
        old.replace("version: 3", "version: 9"),
    )
    .unwrap();
    assert_eq!(read(&renamed), 3, "by the file's name");
    std::fs::remove_file(renamed.join("old_0.mcap")).unwrap();
    let e = BagReader::open(&renamed).unwrap_err().to_string();
    assert!(e.contains("old_0.mcap") && e.contains("missing"), "{e}");
}

#[test]
fn ctrl_c_finishes_the_frame_and_leaves_a_valid_bag_of_what_was_done() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_bayes_perception");
    let sample = sample_bag_and_model(tmp.path(), 3000);
    let out = tmp.path().join("out");
    let partials = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
            .count()
    };
    let interrupted_run = |extra: &[&str]| {
        let mut child = common::Logged::spawn(
            std::process::Command::new(bin)
                .args(["bag", "process"])
                .arg(&sample)
                .arg(&out)
                .arg("--model")
                .arg(tmp.path().join("model"))
                .args(["--device", "cpu"])
                .args(extra),
        );
        // Wait until the run has started writing (its temporary directory exists), then
        // interrupt it like Ctrl-C does.
        assert!(
            child.wait_for(|| partials() > 0),
            "finished before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.signal(libc::SIGINT);
        let output = child.wait_with_output();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(130), "{text}");
        assert!(text.contains("interrupted"), "{text}");
        text
    };
    interrupted_run(&[]);
    // The output is complete and consistent: every processed frame has all its outputs.
    let info = BagReader::open(&out).unwrap().info().unwrap();
    assert!(info.damage.is_none());
    let count = |name: &str| {
        info.topics
            .iter()
            .find(|t| t.name == name)
            .map_or(0, |t| t.message_count)
    };
    let processed = count("/camera/semantic/labels");
    assert!(
        processed > 0 && processed < 3000,
        "{processed} frames processed"
    );
    assert_eq!(count("/camera/depth"), processed);
    assert_eq!(
        count("/camera/image_raw"),
        processed,
        "every copied frame was processed"
    );
    // An interrupted --force run does not put its shorter output in place of a larger
    // earlier one (here a bag of more messages than this input can give): that stays as it
    // was, and nothing of the run is left beside it.
    std::fs::remove_dir_all(&out).unwrap();
    let status = std::process::Command::new(bin)
        .args(["bag", "sample"])
        .arg(&out)
        .args(["--frames", "40000", "--width", "2", "--height", "2"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let files = |dir: &std::path::Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = files(&out);
    let text = interrupted_run(&["--force"]);
    assert!(text.contains("left as it was"), "{text}");
    assert!(files(&out) == before, "the earlier output changed");
    assert_eq!(partials(), 0);
}

/// An output that cannot be written (here the file-size limit, as a full disk would do it)
/// stops the run: the writing thread's error reaches the reading one, which stops reading;
/// the error is clear and said once, the exit code says another try may pass, and neither
/// the output nor the temporary directory is left behind.
#[test]
fn an_output_that_cannot_be_written_stops_the_run_and_leaves_nothing() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_bayes_perception");
    let sample = sample_bag_and_model(tmp.path(), 200);
    let out = tmp.path().join("out");
    let mut command = std::process::Command::new(bin);
    command
        .args(["bag", "process"])
        .arg(&sample)
        .arg(&out)
        .arg("--model")
        .arg(tmp.path().join("model"))
        .args(["--device", "cpu"]);
    // Files of at most 1 MiB (the whole output is about 10 MiB); past it a write fails with
    // EFBIG instead of the process being killed by SIGXFSZ.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("writing the output bag failed; nothing was kept"),
        "{stderr}"
    );
    let reason = std::io::Error::from_raw_os_error(libc::EFBIG).to_string();
    assert_eq!(stderr.matches(&reason).count(), 1, "{stderr}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|name| !name.contains(".partial-")),
        "{left:?}"
    );
}

/// A `bag sample` bag of `frames` 40x30 frames in `dir`/sample (returned) and the tiny
/// model in `dir`/model.
fn sample_bag_and_model(dir: &std::path::Path, frames: u32) -> std::path::PathBuf {
    let sample = dir.join("sample");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .args(["bag", "sample"])
        .arg(&sample)
        .args([
            "--frames",
            &frames.to_string(),
            "--width",
            "40",
            "--height",
            "30",
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    common::tiny_model(3, true)
        .save(&dir.join("model"))
        .unwrap();
    sample
}

/// The (offset, opcode, length) of every top-level record of an MCAP file.
fn mcap_records(bytes: &[u8]) -> Vec<(usize, u8, u64)> {
    let mut out = Vec::new();
    let mut at = 8; // magic
    while at + 9 <= bytes.len() {
        let len = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().unwrap());
        out.push((at, bytes[at], len));
        match (at + 9).checked_add(len as usize) {
            Some(next) if next <= bytes.len() => at = next,
            _ => break,
        }
    }
    out
}

/// The largest resident size of any child this test process has waited for, in bytes.
fn children_max_rss() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss as u64 * 1024
}

/// Records that claim huge lengths — a chunk that says it decompresses to 4 GB, a record
/// 4 GB long, an Image whose data field says 4 GB — are errors that say where reading
/// stopped, never allocations of that size: the reader runs as a child whose peak memory
/// is checked (the largest child of this test process, which stays far below 4 GB).
#[test]
fn records_claiming_huge_lengths_are_rejected_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ok");
    write_bag(&dir, 5);
    let bytes = std::fs::read(dir.join("ok_0.mcap")).unwrap();
    let chunk = mcap_records(&bytes)
        .into_iter()
        .find(|r| r.1 == 0x06)
        .expect("a chunk record");
    let four_gb = 4_000_000_000u64.to_le_bytes();
    // Chunk: opcode, length, start time, end time, then the uncompressed size.
    let mut chunk_size = bytes.clone();
    chunk_size[chunk.0 + 25..chunk.0 + 33].copy_from_slice(&four_gb);
    let mut record_len = bytes.clone();
    record_len[chunk.0 + 1..chunk.0 + 9].copy_from_slice(&four_gb);
    // Cut after the chunk: without a summary, `bag info` counts by reading.
    let end = chunk.0 + 9 + chunk.2 as usize;
    for (name, data) in [("chunk_size", chunk_size), ("record_len", record_len)] {
        let path = tmp.path().join(format!("{name}.mcap"));
        std::fs::write(&path, &data[..end]).unwrap();
        let (_, result) = read_all(&BagReader::open(&path).unwrap());
        let err = result.map(|_| ()).err();
        let out = common::bin()
            .args(["bag", "info"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}");
        assert!(text.contains("reading stopped after"), "{name}: {text}");
        // In process too: an error, not a panic or an abort.
        assert!(err.is_some(), "{name}: read without error");
    }
    let peak = children_max_rss();
    assert!(peak < 2_000_000_000, "a child peaked at {peak} bytes");

    // An Image whose data length field claims 4 GB: a CDR error naming the field.
    let mut cdr = image(0).to_cdr();
    let data_len_at = cdr.len() - 18 - 4;
    cdr[data_len_at..data_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = Image::from_cdr(&cdr).unwrap_err().to_string();
    assert!(err.contains("data: needs 4294967295 bytes"), "{err}");
}

/// Inputs found by fuzzing (fuzz/, RELIABILITY.md), kept as regression tests: each is a
/// clear error, never a crash or an allocation of the size it claims.
#[test]
fn fuzz_findings_are_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    // A record inside a zstd chunk whose length field says ~7e18 bytes: mcap's
    // MessageStream reserved it and aborted the process.
    let path = dir.join("bag_mcap_record_length.mcap");
    let (_, result) = read_all(&BagReader::open(&path).unwrap());
    let err = result.unwrap_err().to_string();
    assert!(err.contains("reading stopped after"), "{err}");
    // A record inside an uncompressed chunk longer than what is left of the chunk: mcap
    // 0.26 subtracts without a check (a panic with overflow checks, a wrapped count that
    // reads on as garbage without).
    let path = dir.join("bag_mcap_chunk_record_overflow.mcap");
    let (_, result) = read_all(&BagReader::open(&path).unwrap());
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("reading stopped after") && err.contains("damaged MCAP data"),
        "{err}"
    );
    // A record whose inner length fields point past its end: mcap 0.26's parse_record
    // sliced out of range and panicked, in `bag info` and `bag process` alike.
    let path = dir.join("bag_mcap_parse_record_slice.mcap");
    let reader = BagReader::open(&path).unwrap();
    let damage = reader.info().unwrap().damage.unwrap();
    assert!(damage.contains("damaged MCAP record"), "{damage}");
    let (_, result) = read_all(&reader);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("damaged MCAP record"), "{err}");
}

/// A ground-truth or camera Image of `w`x`h` with stamp `sec`.
fn ground_truth_image(sec: i32, w: u32, h: u32, encoding: &str, fill: u8) -> Image {
    let bpp = if encoding == "rgb8" { 3 } else { 1 };
    Image {
        header: Header {
            stamp: Time { sec, nanosec: 0 },
            frame_id: "cam".into(),
        },
        height: h,
        width: w,
        encoding: encoding.into(),
        is_bigendian: 0,
        step: w * bpp,
        data: vec![fill; (w * h * bpp) as usize],
    }
}

/// The reasons frames were left out for, with their counts, in order.
fn skip_counts(tally: &bayes_perception::bag::labelled::LabelledTally) -> Vec<(&str, u64)> {
    tally
        .left_out
        .skipped
        .iter()
        .map(|(r, n)| (r.as_str(), *n))
        .collect()
}

#[test]
fn labelled_frames_pair_by_stamp_in_any_order_and_count_what_does_not_pair() {
    use bayes_perception::bag::labelled::{read_labelled_frames, LabelledTopics};
    let dir = tempfile::tempdir().unwrap();
    let (camera, labels) = ("/cam/image_raw", "/cam/ground_truth/labels");
    let rgb = |sec| ground_truth_image(sec, 4, 3, "rgb8", 9);
    let mono = |sec, w, fill| ground_truth_image(sec, w, 3, "mono8", fill);
    // A bag of these messages (as CDR bytes, or as Images) in this order.
    let write_cdr = |name: &str, messages: Vec<(&str, Vec<u8>)>| {
        let path = dir.path().join(name);
        let mut writer = BagWriter::create(&path).unwrap();
        for (t, (topic, cdr)) in messages.into_iter().enumerate() {
            writer
                .write(topic, "sensor_msgs/msg/Image", t as u64 + 1, &cdr)
                .unwrap();
        }
        writer.finish().unwrap();
        BagReader::open(&path).unwrap()
    };
    let write = |name: &str, messages: Vec<(&str, Image)>| {
        let cdr = messages.into_iter().map(|(t, m)| (t, m.to_cdr())).collect();
        write_cdr(name, cdr)
    };
    // The first label of each frame handed on (none of these bags has depth), and the tally.
    let first_labels = |reader: &BagReader, topics: &LabelledTopics| {
        let mut found = Vec::new();
        let tally = read_labelled_frames(reader, topics, |frame| -> Result<_, BagError> {
            found.push(frame.labels.unwrap()[0]);
            assert!(frame.depth.is_none());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        (found, tally)
    };
    // Stamp 1: labels before the image; 2: after it; 3: labels of another size; 4: labels
    // with no image; 5: an image with no labels.
    let reader = write(
        "labelled",
        vec![
            (labels, mono(1, 4, 2)),
            (camera, rgb(1)),
            (camera, rgb(2)),
            (labels, mono(2, 4, 5)),
            (camera, rgb(3)),
            (labels, mono(3, 5, 1)),
            (labels, mono(4, 4, 1)),
            (camera, rgb(5)),
        ],
    );
    let topics = LabelledTopics::find(&reader, None).unwrap();
    assert_eq!(topics.camera, camera);
    assert_eq!(topics.labels.as_deref(), Some(labels));
    assert!(topics.depth.is_none() && topics.noise.is_none() && topics.ood.is_none());
    let (found, tally) = first_labels(&reader, &topics);
    assert_eq!(found, [2, 5]);
    assert_eq!((tally.frames, tally.evaluated), (4, 2));
    let skipped = skip_counts(&tally);
    assert_eq!(
        skipped,
        [
            ("ground truth missing", 1),
            ("ground truth without its camera frame", 1),
            ("parts of one frame disagree in size (4x3 and 5x3)", 1),
        ]
    );

    // Stopped by the visitor (eval's --max-images) while a frame waits for its labels:
    // that frame is not done, not left out.
    let reader = write(
        "stopped",
        vec![
            (camera, rgb(1)),
            (camera, rgb(2)),
            (labels, mono(1, 4, 2)),
            (labels, mono(2, 4, 2)),
        ],
    );
    let tally = read_labelled_frames(&reader, &topics, |_| -> Result<_, BagError> {
        Ok(ControlFlow::Break(()))
    })
    .unwrap();
    assert_eq!((tally.frames, tally.evaluated), (2, 1));
    assert!(tally.left_out.skipped.is_empty(), "{:?}", tally.left_out);

    // Cut short after a chunk that ends between a frame's image and its labels (a
    // recording's chunks need not end at frames): that frame is the damage's loss.
    let path = dir.path().join("split");
    let mut writer = BagWriter::create(&path).unwrap();
    for (t, (topic, msg)) in [(camera, rgb(1)), (labels, mono(1, 4, 2)), (camera, rgb(2))]
        .into_iter()
        .enumerate()
    {
        writer
            .write(topic, "sensor_msgs/msg/Image", t as u64 + 1, &msg.to_cdr())
            .unwrap();
        writer.flush().unwrap();
    }
    writer
        .write(labels, "sensor_msgs/msg/Image", 4, &mono(2, 4, 2).to_cdr())
        .unwrap();
    writer.finish().unwrap();
    let file = path.join("split_0.mcap");
    let bytes = std::fs::read(&file).unwrap();
    let third_chunk = mcap_records(&bytes)
        .into_iter()
        .filter(|r| r.1 == 0x06)
        .nth(2)
        .expect("a chunk per flush");
    std::fs::write(&file, &bytes[..third_chunk.0 + 9 + third_chunk.2 as usize]).unwrap();
    std::fs::remove_file(path.join("metadata.yaml")).unwrap();
    let reader = BagReader::open(&file).unwrap();
    let tally = read_labelled_frames(&reader, &topics, |_| -> Result<_, BagError> {
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!((tally.frames, tally.evaluated), (2, 1));
    assert_eq!(tally.left_out.damage.len(), 1, "{:?}", tally.left_out);
    let skipped: Vec<&str> = tally.left_out.skipped.keys().map(String::as_str).collect();
    assert_eq!(skipped, ["incomplete where reading stopped at the damage"]);

    // Parts that cannot be read leave their frame out once, for their reason: labels of an
    // encoding not accepted (stamp 1), labels that are no Image at all (their stamp
    // unknown: stamp 2's), an image whose pixels are cut short, and its labels (stamp 3).
    let mut cut_image = rgb(3);
    cut_image.data.truncate(5);
    let mut cut_image_6 = rgb(6);
    cut_image_6.data.truncate(5);
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (labels, ground_truth_image(1, 4, 3, "rgb8", 1).to_cdr()),
        (camera, rgb(1).to_cdr()),
        (camera, rgb(2).to_cdr()),
        (labels, vec![0, 1, 0, 0, 7]),
        (camera, cut_image.to_cdr()),
        (labels, mono(3, 4, 1).to_cdr()),
        (camera, rgb(4).to_cdr()),
        (labels, mono(4, 4, 3).to_cdr()),
        // A frame whose every part is no Image (one frame, however many parts), and one
        // whose image is cut short and whose labels are no Image (one frame too).
        (labels, vec![0, 1, 0, 0, 8]),
        (camera, vec![0, 1, 0, 0, 9]),
        (camera, cut_image_6.to_cdr()),
        (labels, vec![0, 1, 0, 0, 10]),
    ];
    let (found, tally) = first_labels(&write_cdr("unreadable", messages), &topics);
    assert_eq!(found, [3]);
    assert_eq!((tally.frames, tally.evaluated), (6, 1));
    let skipped = &tally.left_out.skipped;
    assert_eq!(skipped.values().sum::<u64>(), 5, "{skipped:?}");
    let starts: Vec<&str> = skipped
        .keys()
        .map(|r| &r[..r.find(':').unwrap_or(r.len())])
        .collect();
    assert_eq!(
        starts,
        [
            "camera frame not decodable",
            "camera frame not decodable",
            "ground-truth labels not decodable",
            "ground-truth labels"
        ],
        "{skipped:?}"
    );

    // A bag that reuses stamps (all 0): a frame left out does not take the later frames of
    // its stamp with it.
    let messages = vec![
        (camera, rgb(0)),
        (labels, mono(0, 4, 1)),
        (labels, ground_truth_image(0, 4, 3, "rgb8", 1)),
        (camera, rgb(0)),
        (camera, rgb(0)),
        (labels, mono(0, 4, 2)),
        (camera, rgb(0)),
        (labels, mono(0, 4, 3)),
    ];
    let (found, tally) = first_labels(&write("reused", messages), &topics);
    assert_eq!(found, [1, 2, 3]);
    assert_eq!((tally.frames, tally.evaluated), (4, 3));
    assert_eq!(tally.left_out.skipped.values().sum::<u64>(), 1, "{tally:?}");
}

/// `--json` reports a run that stops with an error too, for the scripts that read it.
#[test]
fn a_run_that_stops_with_an_error_still_writes_its_json_report() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = sample_bag_and_model(tmp.path(), 2);
    let taken = tmp.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    let json = tmp.path().join("report.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .args(["bag", "process"])
        .arg(&sample)
        .arg(&taken)
        .arg("--model")
        .arg(tmp.path().join("model"))
        .args(["--device", "cpu", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["status"], "error");
    assert_eq!(report["exit_code"], 1);
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("exists; pass --force"), "{error}");
    assert!(stderr.contains(error), "{stderr}");
}

/// Runs `bag process` with `args` (the tiny model of `dir`, on the CPU): exit code, stdout,
/// stderr.
fn bag_process(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .args(["bag", "process"])
        .args(args)
        .arg("--model")
        .arg(dir.join("model"))
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`bag_process`] of `input` into `dir/NAME` with `extra` flags and `--json dir/NAME.json`:
/// exit code, stdout and stderr together, the JSON report.
fn bag_process_report(
    dir: &std::path::Path,
    input: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (Option<i32>, String, serde_json::Value) {
    let out = dir.join(name);
    let json = dir.join(format!("{name}.json"));
    let mut args = vec![input.as_os_str(), out.as_os_str(), "--json".as_ref()];
    args.push(json.as_os_str());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let (code, stdout, stderr) = bag_process(dir, &args);
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (code, stdout + &stderr, report)
}

/// Every file under `dir` with its bytes.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// `--force` replaces OUTPUT, and the output keeps the camera topics only: an OUTPUT that
/// is the input, or holds it, is refused and the input left as it was.
#[test]
fn an_output_that_is_the_input_or_holds_it_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = sample_bag_and_model(tmp.path(), 2);
    let before = tree(&sample);
    let file = walk(&sample)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "mcap"))
        .unwrap();
    let metadata = sample.join("metadata.yaml");
    for (input, output) in [
        (&sample, &sample),
        (&file, &sample),
        (&sample, &tmp.path().to_path_buf()),
        (&sample, &file),
        (&sample, &metadata),
        (&file, &file),
    ] {
        let (code, _, stderr) = bag_process(
            tmp.path(),
            &[input.as_os_str(), output.as_os_str(), "--force".as_ref()],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("is the input bag, holds it or is part of it")
                && stderr.contains("write to another OUTPUT"),
            "{stderr}"
        );
        assert_eq!(tree(&sample), before, "the input changed");
    }
}

/// A `--start` past the bag's end and a `--json` that cannot be written are refused
/// before any frame is processed, and nothing is written.
#[test]
fn a_start_past_the_end_and_an_unwritable_json_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = sample_bag_and_model(tmp.path(), 2);
    let out = tmp.path().join("out");
    let (code, _, stderr) = bag_process(
        tmp.path(),
        &[
            sample.as_os_str(),
            out.as_os_str(),
            "--start".as_ref(),
            "100".as_ref(),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--start 100 s is past the end of the bag (0.100 s long)"),
        "{stderr}"
    );
    assert!(!out.exists());
    let json = tmp.path().join("no such dir").join("report.json");
    let (code, stdout, stderr) = bag_process(
        tmp.path(),
        &[
            sample.as_os_str(),
            out.as_os_str(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--json {}: cannot be written", json.display())),
        "{stderr}"
    );
    assert!(!out.exists() && stdout.is_empty(), "{stdout}");
    // An existing report file is not emptied up front: a run refused on its command line
    // (which writes no report) leaves it as it was.
    let json = tmp.path().join("report.json");
    std::fs::write(&json, "earlier").unwrap();
    let (code, _, stderr) = bag_process(
        tmp.path(),
        &[
            sample.as_os_str(),
            out.as_os_str(),
            "--every".as_ref(),
            "0".as_ref(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(std::fs::read_to_string(&json).unwrap(), "earlier");
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        !names(tmp.path()).iter().any(|n| n.contains(".check-")),
        "{:?}",
        names(tmp.path())
    );
    // A report inside OUTPUT, which the run creates: accepted.
    let inside = out.join("summary.json");
    let (code, _, stderr) = bag_process(
        tmp.path(),
        &[
            sample.as_os_str(),
            out.as_os_str(),
            "--json".as_ref(),
            inside.as_os_str(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(inside.is_file());
    let (code, _, stderr) = bag_process(
        tmp.path(),
        &[
            sample.as_os_str(),
            out.as_os_str(),
            "--force".as_ref(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["processed"], 2);
}

/// A bag of 40x30 rgb8 frames on /front/image_raw, one a second, with a calibrated
/// camera_info (of size `info_size`) on `info_topic` before each frame (`once`: before the
/// first only, as a latched publisher records it).
/// The header of the `/front` test camera's messages at `sec` seconds.
fn front_header(sec: i32) -> Header {
    Header {
        stamp: Time { sec, nanosec: 0 },
        frame_id: "front".into(),
    }
}

/// A frame of the `/front` test camera: the 40x30 test pattern, rgb8.
fn front_image(header: Header) -> Image {
    Image {
        header,
        height: 30,
        width: 40,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 120,
        data: common::pattern(40, 30).into_raw(),
    }
}

fn write_camera_bag(
    dir: &std::path::Path,
    frames: u32,
    info_topic: &str,
    info_size: (u32, u32),
    once: bool,
) {
    use bayes_perception::msg::CameraInfo;
    let mut w = BagWriter::create(dir).unwrap();
    for i in 0..frames {
        let header = front_header(100 + i as i32);
        let (width, height) = info_size;
        let info = CameraInfo::pinhole(
            header.clone(),
            width,
            height,
            width as f64,
            (width as f64 - 1.0) / 2.0,
            (height as f64 - 1.0) / 2.0,
        );
        let t = 1_000_000_000 * (i as u64 + 1);
        if i == 0 || !once {
            w.write(info_topic, "sensor_msgs/msg/CameraInfo", t, &info.to_cdr())
                .unwrap();
        }
        w.write(
            "/front/image_raw",
            "sensor_msgs/msg/Image",
            t + 1,
            &front_image(header).to_cdr(),
        )
        .unwrap();
    }
    w.finish().unwrap();
}

/// Topic -> message count of a bag.
fn topic_counts(bag: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    BagReader::open(bag)
        .unwrap()
        .info()
        .unwrap()
        .topics
        .into_iter()
        .map(|t| (t.name, t.message_count))
        .collect()
}

/// A camera_info recorded on another topic than `camera_info` beside the camera: said at
/// the start, every frame without a cloud counted with the reason, and `--camera-info`
/// pairs it with the camera.
#[test]
fn a_camera_info_elsewhere_is_reported_and_can_be_named() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let bag = tmp.path().join("bag");
    let info_topic = "/front/image_raw/camera_info";
    write_camera_bag(&bag, 3, info_topic, (40, 30), false);
    let (out, json) = (tmp.path().join("out"), tmp.path().join("out.json"));
    let (code, stdout, stderr) = bag_process(
        tmp.path(),
        &[
            bag.as_os_str(),
            out.as_os_str(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "/front/image_raw has no camera_info: the bag has no /front/camera_info, so its \
             frames get no depth/camera_info and no point cloud (the bag's camera_info \
             topics: [\"{info_topic}\"]; pair one with --camera-info)"
        )),
        "{stderr}"
    );
    let reason = "no camera_info on /front/camera_info before the frame";
    assert!(
        stdout.contains(&format!("3 frame(s) without a point cloud: {reason}")),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (
            &report["frames_without_points"],
            &report["no_points_reason"]
        ),
        (&serde_json::json!(3), &serde_json::json!(reason))
    );
    let counts = topic_counts(&out);
    assert!(!counts.contains_key("/front/points"), "{counts:?}");
    assert!(!counts.contains_key(info_topic), "{counts:?}");

    // Named: copied, and every frame has its cloud and depth/camera_info.
    let (code, stdout, stderr) = bag_process(
        tmp.path(),
        &[
            bag.as_os_str(),
            out.as_os_str(),
            "--force".as_ref(),
            "--camera-info".as_ref(),
            info_topic.as_ref(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("has no camera_info"), "{stderr}");
    assert!(!stdout.contains("without a point cloud"), "{stdout}");
    let counts = topic_counts(&out);
    for topic in [info_topic, "/front/points", "/front/depth/camera_info"] {
        assert_eq!(counts.get(topic), Some(&3), "{topic}: {counts:?}");
    }

    // Refused: a topic that is not a camera_info of the bag, or one per camera not given.
    let (code, _, stderr) = bag_process(
        tmp.path(),
        &[
            bag.as_os_str(),
            out.as_os_str(),
            "--force".as_ref(),
            "--camera-info".as_ref(),
            "/front/image_raw".as_ref(),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--camera-info /front/image_raw is not a sensor_msgs/CameraInfo topic of this bag \
             (its camera_info topics: [\"{info_topic}\"])"
        )),
        "{stderr}"
    );
    let (code, _, stderr) = bag_process(
        tmp.path(),
        &[
            bag.as_os_str(),
            out.as_os_str(),
            "--force".as_ref(),
            "--camera-info".as_ref(),
            info_topic.as_ref(),
            "--camera-info".as_ref(),
            info_topic.as_ref(),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--camera-info pairs with the cameras in the order of --topic: 2 given for 1 camera topic(s)"),
        "{stderr}"
    );
}

/// A camera_info recorded once, before `--start`: not copied, but the calibration of the
/// window's frames.
#[test]
fn a_camera_info_before_the_window_calibrates_the_frames_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let bag = tmp.path().join("bag");
    write_camera_bag(&bag, 3, "/front/camera_info", (40, 30), true);
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = bag_process(
        tmp.path(),
        &[
            bag.as_os_str(),
            out.as_os_str(),
            "--start".as_ref(),
            "0.5".as_ref(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("2 camera frame(s) read, 2 processed"),
        "{stdout}"
    );
    assert!(!stdout.contains("without a point cloud"), "{stdout}");
    let counts = topic_counts(&out);
    assert_eq!(counts.get("/front/points"), Some(&2), "{counts:?}");
    assert_eq!(
        counts.get("/front/depth/camera_info"),
        Some(&2),
        "{counts:?}"
    );
    assert!(!counts.contains_key("/front/camera_info"), "{counts:?}");
}

/// A camera_info of another aspect ratio than the images (a crop, which no scaling of K
/// describes) gives no cloud and no depth/camera_info, said once and counted, as the node
/// does; a run that processes no frame says so.
#[test]
fn a_doubtful_calibration_is_said_once_and_a_run_with_nothing_processed_warns() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let bag = tmp.path().join("bag");
    write_camera_bag(&bag, 3, "/front/camera_info", (400, 200), false);
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = bag_process(tmp.path(), &[bag.as_os_str(), out.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    let refused = "camera_info is 400x200 and the images 40x30, another aspect ratio";
    assert_eq!(
        stderr
            .matches(&format!("/front/image_raw: {refused}"))
            .count(),
        1,
        "{stderr}"
    );
    let counts = topic_counts(&out);
    assert_eq!(counts.get("/front/depth"), Some(&3), "{counts:?}");
    for refused_topic in ["/front/points", "/front/depth/camera_info"] {
        assert!(!counts.contains_key(refused_topic), "{counts:?}");
    }
    assert!(stdout.contains(refused), "{stdout}");

    // Every frame of an unknown encoding: skipped, counted, and the run says nothing was
    // processed (the exit code stays 0: skipped frames do not change it).
    let odd = tmp.path().join("odd");
    let mut w = BagWriter::create(&odd).unwrap();
    for i in 0..2 {
        let mut frame = image(i);
        frame.encoding = "weird8".into();
        w.write(
            "/cam/image_raw",
            "sensor_msgs/msg/Image",
            1_000 + i as u64,
            &frame.to_cdr(),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let (code, stdout, stderr) = bag_process(
        tmp.path(),
        &[odd.as_os_str(), tmp.path().join("odd_out").as_os_str()],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("2 camera frame(s) read, 0 processed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/cam/image_raw: 2 read, 0 processed, no outputs"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no frame was processed: every camera frame read was skipped or failed"),
        "{stderr}"
    );
}

/// A message-compressed bag (rosbag2's `--compression-mode message`) with one message
/// whose zstd data is damaged: that frame is skipped and counted, and every other message
/// is read and processed (damage of a message's own data does not end the file).
#[test]
fn a_damaged_compressed_message_is_skipped_and_the_rest_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let plain = tmp.path().join("plain");
    write_camera_bag(&plain, 3, "/front/camera_info", (40, 30), false);
    let messages = common::bag_messages(&plain);
    let mut w = BagWriter::create(&tmp.path().join("packed")).unwrap();
    let mut images = 0;
    for (topic, type_name, time, data) in &messages {
        let mut packed = zstd::encode_all(&data[..], 3).unwrap();
        if topic == "/front/image_raw" {
            images += 1;
            if images == 2 {
                packed.truncate(packed.len() / 2);
            }
        }
        w.write(topic, type_name, *time, &packed).unwrap();
    }
    w.finish().unwrap();
    // The storage file alone: compressed messages found by their data.
    let file = tmp.path().join("packed/packed_0.mcap");
    let reader = BagReader::open(&file).unwrap();
    assert_eq!(
        reader.compression(),
        bayes_perception::bag::read::Compression::Message
    );
    let mut seen = Vec::new();
    reader
        .read(|m| {
            seen.push((
                m.topic.to_owned(),
                m.unreadable.map(str::to_owned),
                m.data.to_vec(),
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        seen.len(),
        messages.len(),
        "reading went on past the damage"
    );
    let damaged: Vec<_> = seen.iter().filter(|s| s.1.is_some()).collect();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].0, "/front/image_raw");
    assert!(
        damaged[0]
            .1
            .as_ref()
            .unwrap()
            .contains("does not decompress"),
        "{damaged:?}"
    );
    assert!(damaged[0].2.is_empty());
    for (s, m) in seen.iter().zip(&messages).filter(|(s, _)| s.1.is_none()) {
        assert_eq!(s.2, m.3, "{}", s.0);
    }
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = bag_process(tmp.path(), &[file.as_os_str(), out.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("does not decompress"), "{stdout}");
    let counts = topic_counts(&out);
    assert_eq!(counts.get("/front/depth"), Some(&2), "{counts:?}");
    assert_eq!(
        counts.get("/front/image_raw"),
        Some(&2),
        "the damaged frame is not copied"
    );
    assert_eq!(counts.get("/front/camera_info"), Some(&3), "{counts:?}");
}

/// A single MCAP file of `messages` (topic, message encoding, data) on Image channels,
/// chunked with `compression`.
fn write_raw_mcap(
    path: &std::path::Path,
    messages: &[(&str, &str, Vec<u8>)],
    compression: Option<mcap::Compression>,
) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = mcap::WriteOptions::new()
        .profile("ros2")
        .compression(compression)
        .create(file)
        .unwrap();
    let schema = w
        .add_schema("sensor_msgs/msg/Image", "ros2msg", b"")
        .unwrap();
    let mut channels = std::collections::HashMap::new();
    for (i, (topic, encoding, data)) in messages.iter().enumerate() {
        let channel = *channels.entry((*topic, *encoding)).or_insert_with(|| {
            w.add_channel(schema, topic, encoding, &Default::default())
                .unwrap()
        });
        let header = mcap::records::MessageHeader {
            channel_id: channel,
            sequence: i as u32,
            log_time: 1_000 + i as u64,
            publish_time: 1_000 + i as u64,
        };
        w.write_to_known_channel(&header, data).unwrap();
    }
    w.finish().unwrap();
}

/// Bit rot in an uncompressed MCAP chunk is damage (its CRC), found before any of the
/// chunk's messages is visited, not wrong pixels passed on.
#[test]
fn a_chunk_whose_crc_fails_is_damage_and_none_of_its_messages_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rot.mcap");
    let data = image(1).to_cdr();
    write_raw_mcap(&path, &[("/camera/image_raw", "cdr", data.clone())], None);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(data.len())
        .position(|w| w == data)
        .expect("the message stored as it is");
    bytes[at + data.len() - 1] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let (messages, result) = read_all(&BagReader::open(&path).unwrap());
    assert!(
        messages.is_empty(),
        "a message of the rotten chunk was read"
    );
    let e = result.unwrap_err();
    assert!(matches!(e, BagError::Corrupt { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("crc"), "{e}");
}

/// MCAP channels of another message encoding than CDR (other writers' JSON, say): their
/// messages are visited as unreadable, with the reason, and the CDR ones as usual.
#[test]
fn messages_that_are_not_cdr_are_unreadable_not_taken_for_cdr() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mixed.mcap");
    write_raw_mcap(
        &path,
        &[
            ("/camera/image_raw", "cdr", image(0).to_cdr()),
            ("/other/image_raw", "json", b"{\"width\": 3}".to_vec()),
            ("/camera/image_raw", "cdr", image(1).to_cdr()),
        ],
        Some(mcap::Compression::Zstd),
    );
    let mut seen = Vec::new();
    BagReader::open(&path)
        .unwrap()
        .read(|m| {
            seen.push((
                m.topic.to_owned(),
                m.unreadable.map(str::to_owned),
                m.data.len(),
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1],
        (
            "/other/image_raw".to_owned(),
            Some("message encoding `json` is not CDR (rosbag2's)".to_owned()),
            0
        )
    );
    assert!(seen[0].1.is_none() && seen[2].1.is_none() && seen[2].2 > 0);
}

/// One type per topic (metadata.yaml lists one); a bag without messages starts at 0, not
/// at the INT64_MAX rosbag2 writes for it.
#[test]
fn a_topic_keeps_its_type_and_an_empty_bag_starts_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = BagWriter::create(&tmp.path().join("typed")).unwrap();
    w.write("/a", "sensor_msgs/msg/Image", 1, &image(0).to_cdr())
        .unwrap();
    let e = w
        .write(
            "/a",
            "sensor_msgs/msg/CompressedImage",
            2,
            &image(0).to_cdr(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("topic /a is written as sensor_msgs/msg/Image, not also as sensor_msgs/msg/CompressedImage"),
        "{e}"
    );
    w.finish().unwrap();
    let empty = tmp.path().join("empty");
    BagWriter::create(&empty).unwrap().finish().unwrap();
    let metadata = empty.join("metadata.yaml");
    let text: String = std::fs::read_to_string(&metadata)
        .unwrap()
        .lines()
        .map(|l| match l.split_once("nanoseconds_since_epoch:") {
            Some((indent, _)) => format!("{indent}nanoseconds_since_epoch: 9223372036854775807\n"),
            None => format!("{l}\n"),
        })
        .collect();
    assert!(text.contains("9223372036854775807"), "{text}");
    std::fs::write(&metadata, text).unwrap();
    let info = BagReader::open(&empty).unwrap().info().unwrap();
    assert_eq!(
        (info.message_count, info.start_ns, info.duration_ns),
        (0, 0, 0)
    );
}

/// A bag truncated by another process while it is read: reading stops with an error, the
/// process lives (a memory-mapped file raised SIGBUS on the lost pages).
#[test]
fn a_file_truncated_while_it_is_read_is_an_error_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    let mut w = BagWriter::create(&dir).unwrap();
    // 24 frames of 1 MB of noise (zstd keeps it at its size): far past the read buffer.
    let mut state = 1u32;
    for i in 0..24 {
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let frame = Image {
            width: 1 << 18,
            height: 1,
            step: 1 << 20,
            encoding: "rgba8".into(),
            data,
            ..image(i)
        };
        w.write(
            "/camera/image_raw",
            "sensor_msgs/msg/Image",
            1_000 + i as u64,
            &frame.to_cdr(),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let file = dir.join("big_0.mcap");
    let mut seen = 0;
    let result = BagReader::open(&file).unwrap().read(|_| {
        seen += 1;
        if seen == 1 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
        ControlFlow::Continue(())
    });
    assert!(seen < 24, "{seen} messages after the cut");
    let e = result.unwrap_err();
    assert!(matches!(e, BagError::Corrupt { .. }), "{e}");
}

/// A split bag at `dir` of one storage file per part (`split_0.mcap`, ...), each of these
/// (topic, Image CDR) messages a chunk of its own.
fn write_split_bag(dir: &std::path::Path, parts: Vec<Vec<(&str, Vec<u8>)>>) {
    let mut w = BagWriter::create_named(dir, "split").unwrap();
    let mut t = 0u64;
    for (k, messages) in parts.into_iter().enumerate() {
        if k > 0 {
            w.split().unwrap();
        }
        for (topic, cdr) in messages {
            t += 1;
            w.write(topic, "sensor_msgs/msg/Image", 1_000 + t * 100, &cdr)
                .unwrap();
            w.flush().unwrap();
        }
    }
    w.finish().unwrap();
}

/// A split bag at `dir` of 30 camera frames (`image(i)`), ten in each of three files.
fn write_camera_split_bag(dir: &std::path::Path) {
    let part = |frames: std::ops::Range<u32>| {
        frames
            .map(|i| ("/camera/image_raw", image(i).to_cdr()))
            .collect()
    };
    write_split_bag(dir, vec![part(0..10), part(10..20), part(20..30)]);
}

/// Cuts the MCAP file at `path` short inside its chunk number `n` (from 0).
fn cut_inside_chunk(path: &std::path::Path, n: usize) {
    let bytes = std::fs::read(path).unwrap();
    let chunk = mcap_records(&bytes)
        .into_iter()
        .filter(|r| r.1 == 0x06)
        .nth(n)
        .expect("that many chunks");
    std::fs::write(path, &bytes[..chunk.0 + 20]).unwrap();
}

/// Damage in one storage file of a split bag loses the rest of that file only: the
/// later files are read, and the error (at the end) names every damaged file.
#[test]
fn damage_in_one_file_of_a_split_bag_loses_only_the_rest_of_that_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("split");
    write_camera_split_bag(&dir);
    let (whole, result) = read_all(&BagReader::open(&dir).unwrap());
    result.unwrap();
    assert_eq!(whole.len(), 30);

    // The middle file cut short inside its sixth chunk: five of its frames are read.
    let middle = dir.join("split_1.mcap");
    cut_inside_chunk(&middle, 5);
    let (messages, result) = read_all(&BagReader::open(&dir).unwrap());
    let frames: Vec<u32> = messages
        .iter()
        .map(|(_, _, _, m)| (m.header.stamp.sec - 100) as u32)
        .collect();
    let expected: Vec<u32> = (0..15).chain(20..30).collect();
    assert_eq!(frames, expected);
    for (_, _, _, m) in &messages {
        assert_eq!(*m, image((m.header.stamp.sec - 100) as u32));
    }
    let e = result.unwrap_err();
    assert!(
        matches!(&e, BagError::Corrupt { path, messages_read: 5, .. } if *path == middle),
        "{e}"
    );
    assert!(!e.to_string().contains("later files damaged too"), "{e}");

    // The first file damaged too (inside its fourth chunk): both named, the first first;
    // the rest still read.
    let first = dir.join("split_0.mcap");
    cut_inside_chunk(&first, 3);
    let (messages, result) = read_all(&BagReader::open(&dir).unwrap());
    assert_eq!(messages.len(), 3 + 5 + 10);
    assert_eq!(messages.last().unwrap().3, image(29));
    let e = result.unwrap_err();
    assert!(
        matches!(&e, BagError::Corrupt { path, .. } if *path == first),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("later files damaged too") && text.contains("split_1.mcap"),
        "{text}"
    );

    // `bag process` processes the later files too and says the bag is damaged.
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let out = common::bin()
        .args(["bag", "process"])
        .arg(&dir)
        .arg(tmp.path().join("out"))
        .arg("--model")
        .arg(tmp.path().join("model"))
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("input damaged"), "{text}");
    let read = text
        .lines()
        .find_map(|l| l.split_once(" camera frame(s) read,").map(|(n, _)| n))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no count of frames read: {text}"));
    assert_eq!(read, messages.len(), "{text}");
}

/// A storage file metadata.yaml lists that is not there is damage of that file: the
/// others are read (`bag info` says which is missing, `bag process` processes the rest and
/// reports the run `damaged`); with none of them there the bag is refused at open.
#[test]
fn a_missing_file_of_a_split_bag_is_damage_and_the_others_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("split");
    write_camera_split_bag(&dir);
    let middle = dir.join("split_1.mcap");
    std::fs::remove_file(&middle).unwrap();
    let reader = BagReader::open(&dir).unwrap();
    let info = reader.info().unwrap();
    let said = info.damage.clone().expect("the missing file is said");
    assert!(
        said.contains("split_1.mcap") && said.contains("not there"),
        "{said}"
    );
    let (messages, result) = read_all(&reader);
    let frames: Vec<u32> = messages
        .iter()
        .map(|(_, _, _, m)| (m.header.stamp.sec - 100) as u32)
        .collect();
    assert_eq!(frames, (0..10).chain(20..30).collect::<Vec<_>>());
    let e = result.unwrap_err();
    assert!(
        matches!(&e, BagError::Corrupt { path, messages_read: 0, .. } if *path == middle),
        "{e}"
    );

    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let (code, text, report) = bag_process_report(tmp.path(), &dir, "out", &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(report["status"], "damaged", "{report}");
    assert_eq!(report["processed"], 20, "{report}");
    assert!(
        report["damage"].as_str().unwrap().contains("split_1.mcap"),
        "{report}"
    );

    // None of them there: refused, naming the first.
    for k in [0, 2] {
        std::fs::remove_file(dir.join(format!("split_{k}.mcap"))).unwrap();
    }
    let e = BagReader::open(&dir).unwrap_err().to_string();
    assert!(
        e.contains("split_0.mcap") && e.contains("missing") && e.contains("2 other(s)"),
        "{e}"
    );
}

/// `bag process --start/--duration`: damage whose lost part lies outside the window lost
/// no frame of it, so the run is not `damaged` (said, and in the report); damage whose
/// lost part may hold frames of the window is.
#[test]
fn damage_outside_the_window_does_not_make_the_run_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("split");
    // Frame i is logged at 1100 + 100 i ns (write_split_bag); the bag starts at 1100 ns.
    write_camera_split_bag(&dir);
    // Frames 15..20 (2600..3000 ns) lost: the lost part lies between 2500 and 3100 ns.
    cut_inside_chunk(&dir.join("split_1.mcap"), 5);
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let run = |name: &str, window: &[&str]| bag_process_report(tmp.path(), &dir, name, window);
    let processed = |report: &serde_json::Value| report["processed"].as_u64().unwrap();

    // Before the damage: frames 0..13 (1100..2300 ns).
    let (code, text, report) = run("before", &["--duration", "0.00000125"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(processed(&report), 13, "{text}");
    assert_eq!(report["status"], "ok", "{report}");
    assert!(report["damage"].is_null(), "{report}");
    assert!(
        text.contains("input damaged outside --start/--duration") && text.contains("split_1.mcap"),
        "{text}"
    );
    assert!(!text.contains("\ninput damaged:"), "{text}");
    assert_eq!(report["damage_outside_window"].as_array().unwrap().len(), 1);

    // After it: frames 21..30 (3200..4000 ns); the window starts at 3150 ns.
    let (code, text, report) = run("after", &["--start", "0.00000205"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(processed(&report), 9, "{text}");
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["damage_outside_window"].as_array().unwrap().len(), 1);
    assert!(
        text.contains("input damaged outside --start/--duration"),
        "{text}"
    );

    // A window over the lost part: damaged, as without a window.
    let (code, text, report) = run("over", &["--start", "0.00000125", "--duration", "0.000001"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("input damaged:"), "{text}");
    assert_eq!(report["status"], "damaged", "{report}");
    assert!(
        report["damage"].as_str().unwrap().contains("split_1.mcap"),
        "{report}"
    );
    assert_eq!(report["damage_outside_window"].as_array().unwrap().len(), 0);
    // The window is 2350..3350 ns: frames 13, 14 and 20..23 read, 15..20 lost.
    assert_eq!(processed(&report), 5, "{text}");
}

/// Labelled frames read across the files of a split bag: frames with a part in the lost
/// rest of a damaged file are left out as the damage's loss (also one whose other part
/// comes after the damage), frames of the later files are evaluated (one with its image
/// and labels in different files), and the damage is in the tally.
#[test]
fn labelled_frames_after_a_damaged_file_of_a_split_bag_are_evaluated() {
    use bayes_perception::bag::labelled::{read_labelled_frames, LabelledTopics};
    let tmp = tempfile::tempdir().unwrap();
    let (camera, labels) = ("/cam/image_raw", "/cam/ground_truth/labels");
    let rgb = |sec| (camera, ground_truth_image(sec, 4, 3, "rgb8", 9).to_cdr());
    let mono = |sec, fill| {
        (
            labels,
            ground_truth_image(sec, 4, 3, "mono8", fill).to_cdr(),
        )
    };
    let dir = tmp.path().join("labelled");
    write_split_bag(
        &dir,
        vec![
            vec![rgb(1), mono(1, 1), rgb(2), mono(2, 2), rgb(3)],
            vec![mono(3, 3), rgb(4), mono(4, 4), rgb(5)],
            vec![mono(5, 5), rgb(6)],
        ],
    );
    // Frame 2's labels and frame 3's image lost with the rest of the first file.
    cut_inside_chunk(&dir.join("split_0.mcap"), 3);
    let reader = BagReader::open(&dir).unwrap();
    let topics = LabelledTopics::find(&reader, None).unwrap();
    let mut found = Vec::new();
    let tally = read_labelled_frames(&reader, &topics, |frame| -> Result<_, BagError> {
        found.push(frame.labels.unwrap()[0]);
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(found, [1, 4, 5]);
    assert_eq!((tally.frames, tally.evaluated), (5, 3));
    let skipped = skip_counts(&tally);
    assert_eq!(
        skipped,
        [
            ("ground truth missing", 1),
            ("incomplete where reading stopped at the damage", 2),
        ]
    );
    assert_eq!(tally.left_out.damage.len(), 1, "{:?}", tally.left_out);
    assert!(
        tally.left_out.damage[0].contains("split_0.mcap"),
        "{:?}",
        tally.left_out.damage
    );
}

/// A long run's writer: groups (a frame's messages) share chunks of about 1 MiB instead of
/// a chunk each (the MCAP writer keeps an index entry per chunk until its file ends, which
/// grew `bag process` by about 1.5 KB a frame), no group is cut by a chunk or a file, and
/// past the size limit the bag goes on in a new storage file, listed in metadata.yaml and
/// read back whole.
#[test]
fn groups_share_chunks_and_the_bag_splits_into_files_between_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("long");
    let mut w = BagWriter::create(&dir).unwrap();
    const MAX: u64 = 3 << 20;
    w.set_max_file_bytes(Some(MAX));
    // Incompressible messages (a CDR header and noise): sizes on disk are theirs. Made
    // before writing, which then takes well under the second after which a chunk ends.
    let mut state = 7u64;
    let mut message = |n: usize| -> Vec<u8> {
        let mut data = vec![0, 1, 0, 0];
        data.extend((0..n).map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        }));
        data
    };
    const GROUPS: u64 = 200;
    let messages: Vec<Vec<u8>> = (0..3 * GROUPS).map(|_| message(20_000)).collect();
    for g in 0..GROUPS {
        w.hold_chunk();
        for (k, topic) in ["/a", "/b", "/c"].into_iter().enumerate() {
            let data = &messages[(g * 3) as usize + k];
            w.write(topic, "sensor_msgs/msg/Image", g * 10 + k as u64, data)
                .unwrap();
        }
        w.end_group().unwrap();
    }
    let summary = w.finish().unwrap();
    assert!(summary.files.len() >= 3, "{:?}", summary.files);

    // Where each message went: group -> (file, chunk) of each of its messages.
    let mut places = std::collections::BTreeMap::<u64, Vec<(usize, usize)>>::new();
    let mut chunks = 0;
    let mut per_file = Vec::new();
    for (f, name) in summary.files.iter().enumerate() {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        if f + 1 < summary.files.len() {
            let size = bytes.len() as u64;
            assert!(
                (MAX..=MAX + 128 * 1024).contains(&size),
                "{name}: {size} bytes, the limit {MAX}"
            );
        }
        let file_summary = mcap::Summary::read(&bytes).unwrap().expect("a summary");
        let mut messages = 0u64;
        for (c, index) in file_summary.chunk_indexes.iter().enumerate() {
            for m in file_summary.stream_chunk(&bytes, index).unwrap() {
                let m = m.unwrap();
                places.entry(m.log_time / 10).or_default().push((f, c));
                messages += 1;
            }
        }
        chunks += file_summary.chunk_indexes.len();
        per_file.push(messages);
    }
    assert_eq!(places.len() as u64, GROUPS);
    for (g, at) in &places {
        assert_eq!(at.len(), 3, "group {g}");
        assert!(at.iter().all(|p| *p == at[0]), "group {g} cut: {at:?}");
    }
    // 60 kB groups in 1 MiB chunks (about 16), a chunk ended at each file's end, and a few
    // more should the machine be slow enough for the one-second rule to end some.
    assert!(chunks <= 50, "{chunks} chunks for {GROUPS} groups");

    // metadata.yaml lists every file with its messages, and the bag reads back in order.
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("metadata.yaml")).unwrap()).unwrap();
    let meta = &doc["rosbag2_bagfile_information"];
    let listed: Vec<&str> = meta["relative_file_paths"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed, summary.files);
    let counts: Vec<u64> = meta["files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["message_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, per_file);
    assert_eq!(meta["message_count"].as_u64(), Some(3 * GROUPS));
    let mut times = Vec::new();
    BagReader::open(&dir)
        .unwrap()
        .read(|m| {
            times.push(m.log_time);
            ControlFlow::Continue(())
        })
        .unwrap();
    let expected: Vec<u64> = (0..GROUPS)
        .flat_map(|g| (0..3).map(move |k| g * 10 + k))
        .collect();
    assert_eq!(times, expected);

    // A file that fills up at the last group leaves no empty file behind it: the next file
    // is begun by the next message. A limit of 1 byte: a file per group.
    let dir = tmp.path().join("tight");
    let mut w = BagWriter::create(&dir).unwrap();
    w.set_max_file_bytes(Some(1));
    for g in 0..3 {
        w.hold_chunk();
        w.write("/a", "sensor_msgs/msg/Image", g, &messages[0])
            .unwrap();
        w.end_group().unwrap();
    }
    // A message refused (another type on a topic) begins no file either.
    let refused = w.write("/a", "sensor_msgs/msg/CameraInfo", 9, &messages[0]);
    assert!(refused.is_err());
    let summary = w.finish().unwrap();
    assert_eq!(
        summary.files,
        ["tight_0.mcap", "tight_1.mcap", "tight_2.mcap"]
    );
    assert_eq!(walk(&dir).len(), 4, "a storage file not listed");

    // Tiny chunks: a file ends after MAX_FILE_CHUNKS of them whatever its size (the index
    // of a file's chunks is what the writer keeps in memory).
    let dir = tmp.path().join("many");
    let mut w = BagWriter::create(&dir).unwrap();
    let cap = bayes_perception::bag::write::MAX_FILE_CHUNKS as u64;
    for t in 0..cap + 1 {
        w.write("/a", "sensor_msgs/msg/Image", t, &[0, 1, 0, 0, 7])
            .unwrap();
        w.flush().unwrap();
    }
    let summary = w.finish().unwrap();
    assert_eq!(summary.files, ["many_0.mcap", "many_1.mcap"]);
    let bytes = std::fs::read(dir.join("many_0.mcap")).unwrap();
    let first = mcap::Summary::read(&bytes).unwrap().unwrap();
    assert_eq!(first.chunk_indexes.len() as u64, cap);
}

/// A metadata record given to the writer is in every storage file of a split bag, and reads
/// back from each.
#[test]
fn every_storage_file_holds_the_metadata_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bag");
    let mut writer = BagWriter::create(&dir).unwrap();
    writer.set_max_file_bytes(Some(1));
    let entries = std::collections::BTreeMap::from([
        ("model".to_owned(), "/models/demo".to_owned()),
        ("params".to_owned(), "mode: mc\nseed: 1\n".to_owned()),
    ]);
    writer
        .set_metadata("bayes_perception", entries.clone())
        .unwrap();
    for i in 0..3 {
        writer.hold_chunk();
        writer
            .write(
                "/camera/image_raw",
                "sensor_msgs/msg/Image",
                i as u64 + 1,
                &image(i).to_cdr(),
            )
            .unwrap();
        writer.end_group().unwrap();
    }
    let summary = writer.finish().unwrap();
    assert_eq!(summary.files.len(), 3);
    for (k, file) in summary.files.iter().enumerate() {
        let records = BagReader::open(&dir.join(file)).unwrap().metadata_records();
        assert_eq!(records.len(), 2, "{file}");
        assert_eq!(
            (records[0].name.as_str(), &records[0].entries),
            ("bayes_perception", &entries)
        );
        // Each file ends with rosbag2's record: the bag's metadata up to that file, of the
        // version metadata.yaml has (by which rosbag2 reads a file alone).
        assert_eq!(records[1].name, "rosbag2");
        let serialized: serde_yaml::Value =
            serde_yaml::from_str(&records[1].entries["serialized_metadata"]).unwrap();
        assert_eq!(serialized["version"], serde_yaml::Value::from(5));
        assert_eq!(serialized["message_count"], serde_yaml::Value::from(k + 1));
        let paths = serialized["relative_file_paths"].as_sequence().unwrap();
        assert_eq!(paths.len(), k + 1);
    }
    // The bag directory reads its first file's.
    assert_eq!(BagReader::open(&dir).unwrap().metadata_records().len(), 2);
}

/// A summary whose metadata indexes point outside the file, claim huge lengths or point at
/// one record ten thousand times: each record within the file is read once.
#[test]
fn hostile_metadata_indexes_read_each_record_once_within_the_file() {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn record(out: &mut Vec<u8>, opcode: u8, body: &[u8]) {
        out.push(opcode);
        out.extend((body.len() as u64).to_le_bytes());
        out.extend(body);
    }
    const MAGIC: &[u8] = b"\x89MCAP0\r\n";
    let mut file = MAGIC.to_vec();
    let mut header = Vec::new();
    string(&mut header, "ros2");
    string(&mut header, "test");
    record(&mut file, 0x01, &header);
    let offset = file.len() as u64;
    let (mut body, mut map) = (Vec::new(), Vec::new());
    string(&mut body, "bayes_perception");
    string(&mut map, "model");
    string(&mut map, "m");
    body.extend((map.len() as u32).to_le_bytes());
    body.extend(&map);
    record(&mut file, 0x0C, &body);
    let length = file.len() as u64 - offset;
    record(&mut file, 0x0F, &0u32.to_le_bytes());
    let summary_start = file.len() as u64;
    let index = |offset: u64, length: u64| {
        let mut body = Vec::new();
        body.extend(offset.to_le_bytes());
        body.extend(length.to_le_bytes());
        string(&mut body, "bayes_perception");
        body
    };
    for _ in 0..10_000 {
        record(&mut file, 0x0D, &index(offset, length));
    }
    for (offset, length) in [
        (offset, u64::MAX),
        (u64::MAX - 4, 8),
        (offset, 1 << 40),
        (offset + 1, length),
    ] {
        record(&mut file, 0x0D, &index(offset, length));
    }
    let mut footer = Vec::new();
    footer.extend(summary_start.to_le_bytes());
    footer.extend(0u64.to_le_bytes());
    footer.extend(0u32.to_le_bytes());
    record(&mut file, 0x02, &footer);
    file.extend(MAGIC);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("hostile.mcap");
    std::fs::write(&path, &file).unwrap();
    let records = BagReader::open(&path).unwrap().metadata_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].entries["model"], "m");
}

/// A message of another bag as `BagWriter::copy` takes it.
fn copied<'a>(
    topic: &'a str,
    type_name: &'a str,
    (log_time, publish_time): (u64, u64),
    data: &'a [u8],
    recorded: &'a std::sync::Arc<bayes_perception::bag::Recorded>,
) -> bayes_perception::bag::BagMessage<'a> {
    bayes_perception::bag::BagMessage {
        topic,
        type_name,
        log_time,
        publish_time,
        data,
        recorded,
        unreadable: None,
    }
}

/// What the reader gives of each message: topic, log and publish time, data, and how its
/// topic was recorded.
type Kept = (String, u64, u64, Vec<u8>, bayes_perception::bag::Recorded);

fn read_kept(bag: &std::path::Path) -> Vec<Kept> {
    let mut kept = Vec::new();
    BagReader::open(bag)
        .unwrap()
        .read(|m| {
            kept.push((
                m.topic.to_owned(),
                m.log_time,
                m.publish_time,
                m.data.to_vec(),
                (**m.recorded).clone(),
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
    kept
}

/// rosbag2 Jazzy's profile of a latched publisher (policies by name).
const LATCHED_QOS: &str = "- history: keep_last\n  depth: 1\n  reliability: reliable\n  \
    durability: transient_local\n  deadline:\n    sec: 9223372036\n    nsec: 854775807\n  \
    lifespan:\n    sec: 9223372036\n    nsec: 854775807\n  liveliness: automatic\n  \
    liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n  \
    avoid_ros_namespace_conventions: false";

/// Copies keep what the input recorded across storage files: the bytes, log and publish
/// times, the message definition (or none: the schema says so) and the offered QoS (as
/// rmw's numbers, how a bag of metadata version 5 is read); metadata.yaml lists the QoS
/// too. Then `bag process --copy-all` of such a bag keeps the same, with the latched
/// `/tf_static` from before --start.
#[test]
fn copies_keep_times_definitions_and_qos_across_files_and_through_bag_process() {
    use bayes_perception::bag::Recorded;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let tf = Arc::new(Recorded {
        definition: Some((
            "ros2msg".into(),
            b"geometry_msgs/TransformStamped[] transforms\n".to_vec(),
        )),
        offered_qos_profiles: LATCHED_QOS.into(),
    });
    let bare = Arc::new(Recorded::default());
    let bag = tmp.path().join("copies");
    let mut w = BagWriter::create(&bag).unwrap();
    w.set_max_file_bytes(Some(1));
    let tf_data = vec![0, 1, 0, 0, 9, 9, 9];
    for k in 0..3u64 {
        w.copy(&copied(
            "/tf_static",
            "tf2_msgs/msg/TFMessage",
            (10 + k, 5 + k),
            &tf_data,
            &tf,
        ))
        .unwrap();
        w.copy(&copied(
            "/custom",
            "my_msgs/msg/Thing",
            (20 + k, 20 + k),
            b"\0\x01\0\0x",
            &bare,
        ))
        .unwrap();
        w.end_group().unwrap();
    }
    let summary = w.finish().unwrap();
    assert!(summary.files.len() >= 2, "{:?}", summary.files);
    let kept = read_kept(&bag);
    assert_eq!(kept.len(), 6);
    let numbers = bayes_perception::bag::qos::as_numbers(LATCHED_QOS).unwrap();
    assert!(numbers.contains("durability: 1"), "{numbers}");
    for (k, (topic, log, publish, data, recorded)) in kept.iter().enumerate() {
        let k = k as u64 / 2;
        if topic == "/tf_static" {
            assert_eq!((*log, *publish), (10 + k, 5 + k));
            assert_eq!(data, &tf_data);
            assert_eq!(recorded.definition, tf.definition);
            assert_eq!(recorded.offered_qos_profiles, numbers);
            assert!(recorded.is_latched());
        } else {
            assert_eq!(topic, "/custom");
            assert_eq!(recorded, &Recorded::default(), "no definition, no QoS");
        }
    }
    let metadata = std::fs::read_to_string(bag.join("metadata.yaml")).unwrap();
    assert!(metadata.contains("durability: 1"), "{metadata}");

    // Through bag process: a sample bag with these beside its camera (each copy published
    // a little before it was logged), the window from 1 s on (the sample's frames are
    // 0.1 s apart, /tf_static before them all).
    let sample = sample_bag_and_model(tmp.path(), 20);
    let input = tmp.path().join("with_tf");
    let mut w = BagWriter::create(&input).unwrap();
    let start = BagReader::open(&sample).unwrap().info().unwrap().start_ns;
    let window_start = start + 1_000_000_000;
    let mut first = true;
    let mut late = true;
    let mut custom_in_window = 0;
    BagReader::open(&sample)
        .unwrap()
        .read(|m| {
            let mut tf_static = |times| {
                let message = copied("/tf_static", "tf2_msgs/msg/TFMessage", times, &tf_data, &tf);
                w.copy(&message).unwrap();
            };
            if first {
                tf_static((m.log_time, m.log_time - 3));
                first = false;
            }
            // A latched message logged before the window but stored after its first
            // message (an input not in log-time order).
            if late && m.log_time > window_start {
                tf_static((start + 5, start + 4));
                late = false;
            }
            w.copy(&BagMessage {
                publish_time: m.log_time - 2,
                ..*m
            })
            .unwrap();
            let times = (m.log_time, m.log_time - 1);
            w.copy(&copied(
                "/custom",
                "my_msgs/msg/Thing",
                times,
                b"\0\x01\0\0y",
                &bare,
            ))
            .unwrap();
            custom_in_window += u64::from(m.log_time >= window_start);
            ControlFlow::Continue(())
        })
        .unwrap();
    w.finish().unwrap();
    let (code, text, report) =
        bag_process_report(tmp.path(), &input, "out", &["--copy-all", "--start", "1"]);
    assert_eq!(code, Some(0), "{text}");
    let out = read_kept(&tmp.path().join("out"));
    let of = |topic: &str| -> Vec<&Kept> { out.iter().filter(|m| m.0 == topic).collect() };
    // The latched messages from before the window, logged at its start, published when
    // they were (the one read late as well).
    let tf_out = of("/tf_static");
    assert_eq!(tf_out.len(), 2, "the latched messages before the window");
    assert_eq!((tf_out[0].1, tf_out[0].2), (window_start, start - 3));
    assert_eq!((tf_out[1].1, tf_out[1].2), (window_start, start + 4));
    assert_eq!(tf_out[0].4.definition, tf.definition);
    assert!(tf_out[0].4.is_latched());
    let custom = of("/custom");
    assert_eq!(custom.len() as u64, custom_in_window);
    assert!(custom.iter().all(|m| m.1 >= window_start && m.2 == m.1 - 1));
    // Camera copies keep their publish times too.
    let frames = of("/camera/image_raw");
    assert!(!frames.is_empty() && frames.iter().all(|m| m.2 == m.1 - 2));
    assert_eq!(
        report["copied"],
        serde_json::json!({"/custom": custom_in_window, "/tf_static": 2}),
        "{report}"
    );
    assert_eq!(
        report["copies_outside_window"].as_u64(),
        Some(20 * 2 - custom_in_window),
        "/custom's messages before the window (one beside each of the 40 input messages): {report}"
    );
}

/// In an input out of log-time order, a camera_info read later but logged earlier than the
/// one in use does not replace it: the frames after it keep the latest calibration.
#[test]
fn a_camera_info_logged_earlier_but_read_later_does_not_replace_the_latest() {
    use bayes_perception::msg::CameraInfo;
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(3, true)
        .save(&tmp.path().join("model"))
        .unwrap();
    let bag = tmp.path().join("bag");
    let mut w = BagWriter::create(&bag).unwrap();
    let info = |fx: f64| CameraInfo::pinhole(front_header(100), 40, 30, fx, 19.5, 14.5).to_cdr();
    let frame = |sec: i32| front_image(front_header(sec)).to_cdr();
    const INFO: &str = "sensor_msgs/msg/CameraInfo";
    const IMAGE: &str = "sensor_msgs/msg/Image";
    w.write("/front/camera_info", INFO, 1_000, &info(40.0))
        .unwrap();
    w.write("/front/image_raw", IMAGE, 1_001, &frame(101))
        .unwrap();
    // Logged before the one above, stored after it.
    w.write("/front/camera_info", INFO, 500, &info(80.0))
        .unwrap();
    w.write("/front/image_raw", IMAGE, 2_001, &frame(102))
        .unwrap();
    w.finish().unwrap();
    let out = tmp.path().join("out");
    let (code, _, stderr) = bag_process(tmp.path(), &[bag.as_os_str(), out.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut focal = Vec::new();
    BagReader::open(&out)
        .unwrap()
        .read(|m| {
            if m.topic == "/front/depth/camera_info" {
                focal.push(CameraInfo::from_cdr(m.data).unwrap().k[0]);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(focal, [40.0, 40.0]);
}
