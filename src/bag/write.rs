//! Writing rosbag2 bags in MCAP storage: `<name>_0.mcap` (then `<name>_1.mcap`, .. past
//! [`DEFAULT_MAX_FILE_BYTES`] or [`BagWriter::set_max_file_bytes`]) plus the metadata.yaml
//! that `ros2 bag` and rosbags read. Channels carry message encoding `cdr` and schema
//! encoding `ros2msg` with full definitions, as rosbag2 writes them; a message copied from
//! another bag ([`BagWriter::copy`]) keeps the definition and QoS its topic was recorded
//! with.
//!
//! Like mcap's writer: create, write, then an explicit [`BagWriter::finish`]; a writer
//! dropped without `finish` finishes the MCAP file but writes no metadata.yaml, and a
//! process killed while writing leaves an MCAP file without its summary (whole up to the
//! last chunk it ended).
//!
//! Memory: the MCAP writer keeps an index entry for every chunk of the file until the
//! file is finished (1.5-2.5 KB of resident memory each with a dozen topics, measured
//! as `bag process`'s growth with a chunk per frame). Chunks of about [`CHUNK_BYTES`] and
//! a new storage file past the size limit (or [`MAX_FILE_CHUNKS`]) keep that bounded
//! however long the run.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::read::{BagError, BagMessage, Definition, Recorded};
use super::{qos, schema};

/// What a finished bag holds.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    pub dir: PathBuf,
    pub message_count: u64,
    /// Messages per topic, with the topic's type.
    pub topics: BTreeMap<String, (String, u64)>,
    /// All storage files together.
    pub size_bytes: u64,
    /// Storage files, in order (`<name>_0.mcap`, ..).
    pub files: Vec<String>,
}

/// A bag directory being written.
pub struct BagWriter {
    dir: PathBuf,
    /// Storage files are `<stem>_<k>.mcap`.
    stem: String,
    mcap: mcap::Writer<BufWriter<File>>,
    /// The storage files finished so far, then the one being written (last).
    files: Vec<FileStats>,
    /// Per storage file: schema ids of the current file, by type and definition (topics
    /// of one type copied from other bags may bring different ones, or none).
    schemas: HashMap<(String, Definition), u16>,
    /// Topic -> channel id in the current file.
    channels: HashMap<String, u16>,
    /// Each topic written, over all files.
    topics: BTreeMap<String, TopicStats>,
    sequence: u32,
    /// Message bytes in the current chunk, when the chunk before it ended (or the writer
    /// was created), and whether a group of messages is being written into it (see
    /// `hold_chunk`).
    unflushed: usize,
    last_chunk_end: Instant,
    holding: bool,
    /// A new storage file is begun at a chunk's end past this size (or MAX_FILE_CHUNKS).
    max_file_bytes: Option<u64>,
    /// The current storage file's size when its last chunk ended, and its chunks.
    file_bytes: u64,
    file_chunks: usize,
    /// The current file is full: the next message begins a new one (so a bag never ends
    /// with an empty file).
    split_pending: bool,
    /// Why writing failed where the writer's state no longer matches its files: every
    /// later call returns this error.
    failed: Option<String>,
    /// MCAP metadata records every storage file holds ([`BagWriter::set_metadata`]).
    metadata: Vec<mcap::records::Metadata>,
}

/// How a message of ours was recorded: not at all (no definition of its own, no QoS).
static NOT_RECORDED: std::sync::LazyLock<std::sync::Arc<Recorded>> =
    std::sync::LazyLock::new(Default::default);

/// A topic as the bag holds it.
struct TopicStats {
    type_name: String,
    messages: u64,
    /// The definition its schema holds where the writer has none of its own (a copied
    /// topic's).
    definition: Option<Definition>,
    /// Its offered QoS profiles, with rmw's numbers ([`qos::as_numbers`]), for its
    /// channels and metadata.yaml.
    offered_qos_profiles: String,
}

/// One storage file's part of the bag, for metadata.yaml's `files`.
struct FileStats {
    name: String,
    first_ns: Option<u64>,
    last_ns: u64,
    messages: u64,
}

/// Message bytes (before compression) after which a chunk ends: mcap's own default size.
/// A group of messages held together (`hold_chunk`) is never cut; the chunk ends after it.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A group that ends this long after the last chunk ended ends its chunk too: a run killed
/// loses at most about this much of its work besides the group in hand, however slowly
/// groups come (a slow run writes a chunk per group).
const CHUNK_TIME: Duration = Duration::from_secs(1);

/// The storage file size past which the next chunk goes into a new file, unless set
/// otherwise ([`BagWriter::set_max_file_bytes`]).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;

/// Chunks after which a file ends too (where files have a size limit): the writer's index
/// of them (1.5-2.5 KB each) stays under some 25-40 MB whatever the chunks' size, such as
/// a chunk per small frame in a run slower than a frame a second.
pub const MAX_FILE_CHUNKS: usize = 16_384;

impl BagWriter {
    /// Creates `dir` (it must not exist) and the MCAP file inside, named
    /// `<dir name>_0.mcap` as rosbag2 does.
    pub fn create(dir: &Path) -> Result<Self, BagError> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("bag")
            .to_owned();
        Self::create_named(dir, &name)
    }

    /// Like [`BagWriter::create`], with the storage files named `<stem>_0.mcap`, ..: for a
    /// bag written under a temporary directory name and renamed when complete.
    pub fn create_named(dir: &Path, stem: &str) -> Result<Self, BagError> {
        std::fs::create_dir(dir).map_err(|source| BagError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = storage_file_name(stem, 0);
        let mcap = open_storage(&dir.join(&name))?;
        Ok(BagWriter {
            dir: dir.to_owned(),
            stem: stem.to_owned(),
            mcap,
            files: vec![FileStats::new(name)],
            schemas: HashMap::new(),
            channels: HashMap::new(),
            topics: BTreeMap::new(),
            sequence: 0,
            unflushed: 0,
            last_chunk_end: Instant::now(),
            holding: false,
            max_file_bytes: Some(DEFAULT_MAX_FILE_BYTES),
            file_bytes: 0,
            file_chunks: 0,
            split_pending: false,
            failed: None,
            metadata: Vec::new(),
        })
    }

    /// Adds an MCAP metadata record `name` (string keys and values: how the bag was made,
    /// say) to the current storage file and every later one, so that each file says it
    /// alone (Foxglove and `mcap info` show them; rosbag2 passes them over). Call it before
    /// the first message: a record written later ends the chunk being written.
    pub fn set_metadata(
        &mut self,
        name: &str,
        entries: BTreeMap<String, String>,
    ) -> Result<(), BagError> {
        self.check_failed()?;
        debug_assert!(
            !self.holding,
            "set_metadata inside a group would cut its chunk"
        );
        let record = mcap::records::Metadata {
            name: name.to_owned(),
            metadata: entries,
        };
        self.mcap
            .write_metadata(&record)
            .map_err(|e| self.mcap_error(e))?;
        self.metadata.push(record);
        Ok(())
    }

    /// The size of a storage file past which the next chunk begins a new one (`None`: one
    /// file, however large, and no limit on its chunks). A file can end past it by up to a
    /// group of messages ([`BagWriter::end_group`]), or a chunk of messages written
    /// outside groups. With a limit, a file also ends after 16 384 chunks.
    pub fn set_max_file_bytes(&mut self, max: Option<u64>) {
        self.max_file_bytes = max;
    }

    /// The error of an earlier failure that left this writer unusable, if any.
    fn check_failed(&self) -> Result<(), BagError> {
        match &self.failed {
            Some(why) => Err(BagError::Invalid {
                path: self.dir.clone(),
                message: format!("the bag writer failed earlier: {why}"),
            }),
            None => Ok(()),
        }
    }

    fn current(&mut self) -> &mut FileStats {
        self.files.last_mut().expect("a storage file is open")
    }

    fn current_path(&self) -> PathBuf {
        self.dir
            .join(&self.files.last().expect("a storage file is open").name)
    }

    /// The MCAP error with its causes (the OS error of a full disk, say), which the
    /// mcap crate's own message leaves out. An OS error stays one (`BagError::Io`), so
    /// callers can tell a full disk from a malformed write.
    fn mcap_error(&self, e: mcap::McapError) -> BagError {
        mcap_error_at(self.current_path(), e)
    }

    /// Whether `topic` can be written as `type_name`: one type per topic, as rosbag2
    /// records them (metadata.yaml lists one), and a type whose definition we have (a
    /// `copied` message's may have none).
    fn check_topic(&self, topic: &str, type_name: &str, copied: bool) -> Result<(), BagError> {
        match self.topics.get(topic) {
            Some(t) if t.type_name != type_name => Err(BagError::Invalid {
                path: self.dir.clone(),
                message: format!(
                    "topic {topic} is written as {}, not also as {type_name}",
                    t.type_name
                ),
            }),
            Some(_) => Ok(()),
            // A topic's first message: is there a definition to write its schema from?
            None if copied => Ok(()),
            None => self.definition(type_name).map(drop),
        }
    }

    /// The `ros2msg` definition of `type_name`, which a channel's schema holds.
    fn definition(&self, type_name: &str) -> Result<String, BagError> {
        schema::definition(type_name).ok_or_else(|| BagError::Invalid {
            path: self.dir.clone(),
            message: format!("no message definition for type {type_name}"),
        })
    }

    /// The channel of `topic` in the current file (its entry in `topics` made), with its
    /// schema: our definition of the type, else the one a copied topic brought, else none
    /// (encoding and data empty, as rosbags and Foxglove read a schema without one).
    fn channel(&mut self, topic: &str) -> Result<u16, BagError> {
        if let Some(&id) = self.channels.get(topic) {
            return Ok(id);
        }
        let stats = &self.topics[topic];
        let type_name = stats.type_name.clone();
        let definition = match schema::definition(&type_name) {
            Some(ours) => ("ros2msg".to_owned(), ours.into_bytes()),
            None => stats.definition.clone().unwrap_or_default(),
        };
        let key = (type_name, definition);
        let schema_id = match self.schemas.get(&key) {
            Some(&id) => id,
            None => {
                let (type_name, (encoding, definition)) = &key;
                let id = self
                    .mcap
                    .add_schema(type_name, encoding, definition)
                    .map_err(|e| self.mcap_error(e))?;
                self.schemas.insert(key, id);
                id
            }
        };
        let qos = self.topics[topic].offered_qos_profiles.clone();
        let metadata = BTreeMap::from([("offered_qos_profiles".to_owned(), qos)]);
        let id = self
            .mcap
            .add_channel(schema_id, topic, "cdr", &metadata)
            .map_err(|e| self.mcap_error(e))?;
        self.channels.insert(topic.to_owned(), id);
        Ok(id)
    }

    /// Writes one CDR message of ours (a type [`schema::definition`] knows) logged at
    /// `log_time` (ns since the epoch). Outside a group (`hold_chunk`), a chunk that is
    /// full ends first.
    pub fn write(
        &mut self,
        topic: &str,
        type_name: &str,
        log_time: u64,
        cdr: &[u8],
    ) -> Result<(), BagError> {
        let message = BagMessage {
            topic,
            type_name,
            log_time,
            publish_time: log_time,
            data: cdr,
            recorded: &NOT_RECORDED,
            unreadable: None,
        };
        self.write_message(&message, false)
    }

    /// Copies a message read from another bag, of any type: its bytes and times, and its
    /// topic as it was recorded (the definition the input held, where we have none of our
    /// own; the offered QoS profiles, so `ros2 bag play` offers a latched topic latched).
    /// A topic's first message sets these for the topic.
    pub fn copy(&mut self, message: &BagMessage) -> Result<(), BagError> {
        self.write_message(message, true)
    }

    fn write_message(&mut self, m: &BagMessage, copied: bool) -> Result<(), BagError> {
        self.check_failed()?;
        let (topic, type_name) = (m.topic, m.type_name);
        // Refused before it ends a chunk or begins a file.
        self.check_topic(topic, type_name, copied)?;
        if !self.holding && self.unflushed >= CHUNK_BYTES {
            self.flush()?;
        }
        if self.split_pending {
            self.next_file()?;
        }
        if !self.topics.contains_key(topic) {
            // Profiles that do not read as rosbag2's are left out: the player offers its
            // defaults, as for a bag without them.
            let offered_qos_profiles =
                qos::as_numbers(&m.recorded.offered_qos_profiles).unwrap_or_default();
            let stats = TopicStats {
                type_name: type_name.to_owned(),
                messages: 0,
                definition: m.recorded.definition.clone(),
                offered_qos_profiles,
            };
            self.topics.insert(topic.to_owned(), stats);
        }
        let channel_id = self.channel(topic)?;
        self.sequence = self.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id,
            sequence: self.sequence,
            log_time: m.log_time,
            publish_time: m.publish_time,
        };
        self.mcap
            .write_to_known_channel(&header, m.data)
            .map_err(|e| self.mcap_error(e))?;
        if let Some(stats) = self.topics.get_mut(topic) {
            stats.messages += 1;
        }
        let (log_time, cdr) = (m.log_time, m.data);
        let file = self.current();
        file.first_ns = Some(file.first_ns.map_or(log_time, |f| f.min(log_time)));
        file.last_ns = file.last_ns.max(log_time);
        file.messages += 1;
        self.unflushed += cdr.len();
        Ok(())
    }

    /// The messages written from now until [`BagWriter::end_group`] (a frame's input and
    /// outputs) go into one chunk, however large, and one storage file: a process killed
    /// meanwhile leaves all of them in the file or none.
    pub fn hold_chunk(&mut self) {
        self.holding = true;
    }

    /// Ends a group begun with [`BagWriter::hold_chunk`], and the chunk with it once it
    /// holds [`CHUNK_BYTES`], the last chunk ended a second ago or more, or it may take its
    /// file past the size limit (counting its messages uncompressed): a kill later keeps
    /// the group (and the chunk's earlier ones) whole, one sooner none of the chunk's
    /// groups.
    pub fn end_group(&mut self) -> Result<(), BagError> {
        self.check_failed()?;
        self.holding = false;
        let old = self.last_chunk_end.elapsed() >= CHUNK_TIME;
        let file_full = self
            .max_file_bytes
            .is_some_and(|max| self.file_bytes + self.unflushed as u64 >= max);
        if self.unflushed >= CHUNK_BYTES || old || file_full {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the current chunk and hands everything written so far to the operating system:
    /// a kill of this process (not a power loss) leaves it readable in the file, which
    /// then lacks only its summary ([`BagReader`](super::BagReader) reads such a file up
    /// to its end). Past the size limit, the next message goes into a new storage file.
    /// It ends a group being written too: call it at a group's end, never inside one.
    pub fn flush(&mut self) -> Result<(), BagError> {
        self.check_failed()?;
        self.end_chunk()?;
        let Some(max) = self.max_file_bytes else {
            return Ok(());
        };
        let path = self.current_path();
        self.file_bytes = std::fs::metadata(&path)
            .map_err(|source| BagError::Io { path, source })?
            .len();
        let full = self.file_bytes >= max || self.file_chunks >= MAX_FILE_CHUNKS;
        if full && self.current().messages > 0 {
            self.split_pending = true;
        }
        Ok(())
    }

    /// Ends the current storage file; what follows goes into the next one
    /// (`<stem>_1.mcap`, ..), as rosbag2's `split_bagfile`. Not inside a group.
    pub fn split(&mut self) -> Result<(), BagError> {
        self.check_failed()?;
        debug_assert!(!self.holding, "a split would cut the group");
        self.end_chunk()?;
        self.split_pending = self.current().messages > 0;
        Ok(())
    }

    fn end_chunk(&mut self) -> Result<(), BagError> {
        self.holding = false;
        if self.unflushed > 0 {
            self.file_chunks += 1;
        }
        self.unflushed = 0;
        self.last_chunk_end = Instant::now();
        self.mcap.flush().map_err(|e| self.mcap_error(e))
    }

    /// Finishes the current storage file (summary and index, which frees the writer's
    /// index of its chunks) and opens the next one. A failure leaves the writer failed:
    /// its state would no longer match its files.
    fn next_file(&mut self) -> Result<(), BagError> {
        let name = storage_file_name(&self.stem, self.files.len() as u64);
        let finished = self.current_path();
        let path = self.dir.join(&name);
        // Synced before the next is begun, and the new file's name with the directory: a
        // power loss later leaves the finished files whole and listed (a kill never
        // damages them), so that a salvage can copy them.
        let next = self
            .finish_file()
            .and_then(|_| sync(&finished))
            .and_then(|_| open_storage(&path))
            .and_then(|mut next| {
                for record in &self.metadata {
                    next.write_metadata(record)
                        .map_err(|e| mcap_error_at(path.clone(), e))?;
                }
                Ok(next)
            })
            .and_then(|next| sync(&self.dir).map(|_| next));
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                self.failed = Some(e.to_string());
                return Err(e);
            }
        };
        self.mcap = next;
        log::debug!(
            "{} reached its size limit; writing on in {name}",
            self.current().name
        );
        self.files.push(FileStats::new(name));
        self.file_bytes = 0;
        self.file_chunks = 0;
        self.split_pending = false;
        self.schemas.clear();
        self.channels.clear();
        Ok(())
    }

    /// The bag's metadata as metadata.yaml holds it (version 5), with what is written so
    /// far.
    fn bag_metadata(&self) -> Metadata {
        let start = self
            .files
            .iter()
            .filter_map(|f| f.first_ns)
            .min()
            .unwrap_or(0);
        let end = self.files.iter().map(|f| f.last_ns).max().unwrap_or(0);
        let message_count: u64 = self.topics.values().map(|t| t.messages).sum();
        Metadata {
            version: 5,
            storage_identifier: "mcap",
            duration: Nanoseconds {
                nanoseconds: end.saturating_sub(start),
            },
            starting_time: NanosecondsSinceEpoch {
                nanoseconds_since_epoch: start,
            },
            message_count,
            topics_with_message_count: self
                .topics
                .iter()
                .map(|(name, t)| TopicWithCount {
                    topic_metadata: TopicMetadata {
                        name: name.clone(),
                        type_name: t.type_name.clone(),
                        serialization_format: "cdr",
                        offered_qos_profiles: t.offered_qos_profiles.clone(),
                    },
                    message_count: t.messages,
                })
                .collect(),
            compression_format: "",
            compression_mode: "",
            relative_file_paths: self.files.iter().map(|f| f.name.clone()).collect(),
            files: self
                .files
                .iter()
                .map(|f| {
                    let start = f.first_ns.unwrap_or(0);
                    FileInfo {
                        path: f.name.clone(),
                        starting_time: NanosecondsSinceEpoch {
                            nanoseconds_since_epoch: start,
                        },
                        duration: Nanoseconds {
                            nanoseconds: f.last_ns.saturating_sub(start),
                        },
                        message_count: f.messages,
                    }
                })
                .collect(),
        }
    }

    /// Ends the current storage file with rosbag2's own metadata record (`rosbag2`,
    /// `serialized_metadata`: the bag's metadata so far), as rosbag2 and rosbags end theirs,
    /// so that rosbag2 reading the file alone knows its metadata version, by which it reads
    /// the QoS profiles of the channels; then its summary.
    fn finish_file(&mut self) -> Result<(), BagError> {
        let yaml = serde_yaml::to_string(&self.bag_metadata()).expect("metadata serialises");
        let record = mcap::records::Metadata {
            name: "rosbag2".to_owned(),
            metadata: BTreeMap::from([("serialized_metadata".to_owned(), yaml)]),
        };
        self.mcap
            .write_metadata(&record)
            .and_then(|_| self.mcap.finish())
            .map(drop)
            .map_err(|e| self.mcap_error(e))
    }

    /// Closes the MCAP file (summary and index) and writes metadata.yaml, all synced to
    /// the disk with their directory: a bag renamed into place afterwards is whole even
    /// after a power loss.
    pub fn finish(mut self) -> Result<WriteSummary, BagError> {
        self.check_failed()?;
        self.finish_file()?;
        let mut size_bytes = 0;
        for file in &self.files {
            let path = self.dir.join(&file.name);
            sync(&path)?;
            size_bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
        }
        let metadata = self.bag_metadata();
        let message_count = metadata.message_count;
        let metadata = MetadataFile {
            rosbag2_bagfile_information: metadata,
        };
        let yaml = serde_yaml::to_string(&metadata).expect("metadata serialises");
        let meta_path = self.dir.join("metadata.yaml");
        std::fs::write(&meta_path, yaml).map_err(|source| BagError::Io {
            path: meta_path.clone(),
            source,
        })?;
        sync(&meta_path)?;
        sync(&self.dir)?;
        Ok(WriteSummary {
            dir: self.dir.clone(),
            message_count,
            topics: self
                .topics
                .iter()
                .map(|(name, t)| (name.clone(), (t.type_name.clone(), t.messages)))
                .collect(),
            size_bytes,
            files: self.files.iter().map(|f| f.name.clone()).collect(),
        })
    }
}

impl FileStats {
    fn new(name: String) -> Self {
        FileStats {
            name,
            first_ns: None,
            last_ns: 0,
            messages: 0,
        }
    }
}

/// Creates a storage file and its MCAP writer (zstd chunks, the ros2 profile).
fn open_storage(path: &Path) -> Result<mcap::Writer<BufWriter<File>>, BagError> {
    let file = File::create(path).map_err(|source| BagError::Io {
        path: path.to_owned(),
        source,
    })?;
    mcap::WriteOptions::new()
        .profile("ros2")
        .library(format!("bayes_perception {}", env!("CARGO_PKG_VERSION")))
        .compression(Some(mcap::Compression::Zstd))
        // Chunks end where this writer says (CHUNK_BYTES, end_group, flush), never inside
        // a group of messages held together (hold_chunk).
        .chunk_size(None)
        .create(BufWriter::new(file))
        .map_err(|e| BagError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

#[derive(Serialize)]
struct MetadataFile {
    rosbag2_bagfile_information: Metadata,
}

#[derive(Serialize)]
struct Metadata {
    version: u32,
    storage_identifier: &'static str,
    duration: Nanoseconds,
    starting_time: NanosecondsSinceEpoch,
    message_count: u64,
    topics_with_message_count: Vec<TopicWithCount>,
    compression_format: &'static str,
    compression_mode: &'static str,
    relative_file_paths: Vec<String>,
    files: Vec<FileInfo>,
}

#[derive(Serialize)]
struct Nanoseconds {
    nanoseconds: u64,
}

#[derive(Serialize)]
struct NanosecondsSinceEpoch {
    nanoseconds_since_epoch: u64,
}

#[derive(Serialize)]
struct TopicWithCount {
    topic_metadata: TopicMetadata,
    message_count: u64,
}

#[derive(Serialize)]
struct TopicMetadata {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    serialization_format: &'static str,
    offered_qos_profiles: String,
}

#[derive(Serialize)]
struct FileInfo {
    path: String,
    starting_time: NanosecondsSinceEpoch,
    duration: Nanoseconds,
    message_count: u64,
}

/// The name of storage file `k` of a bag whose files are named after `stem`, as rosbag2
/// names them: `<stem>_<k>.mcap`.
fn storage_file_name(stem: &str, k: u64) -> String {
    format!("{stem}_{k}.mcap")
}

/// The number `k` of a storage file named `<stem>_<k>.mcap`, as the writer names them;
/// `None` for another name. A bag's files are read in this order (`_10` after `_9`).
pub fn storage_file_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".mcap")?
        .rsplit_once('_')?
        .1
        .parse()
        .ok()
}

/// An MCAP error of the storage file `path` as a [`BagError`]: an I/O one (a full disk,
/// say) keeps its OS error.
fn mcap_error_at(path: PathBuf, e: mcap::McapError) -> BagError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    let mut os_error = None;
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            os_error.get_or_insert((io.kind(), io.raw_os_error()));
        }
        source = cause.source();
    }
    if let mcap::McapError::Io(io) = &e {
        os_error.get_or_insert((io.kind(), io.raw_os_error()));
    }
    match os_error {
        Some((kind, raw)) => BagError::Io {
            path,
            source: match raw {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(kind, message),
            },
        },
        None => BagError::Invalid { path, message },
    }
}

/// fsync of a file or directory ([`crate::output::sync_path`]).
fn sync(path: &Path) -> Result<(), BagError> {
    crate::output::sync_path(path).map_err(|source| BagError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_files_are_numbered_as_they_are_named() {
        for k in [0, 9, 10, 16_384] {
            let name = storage_file_name("run_a", k);
            assert_eq!(storage_file_number(Path::new(&name)), Some(k), "{name}");
        }
        for other in ["run.mcap", "run_x.mcap", "run_1.db3", "run_1.mcap.zstd"] {
            assert_eq!(storage_file_number(Path::new(other)), None, "{other}");
        }
    }
}
