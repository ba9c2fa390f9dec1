//! Reading rosbag2 bags without ROS: a bag directory (metadata.yaml + storage files) or a
//! single `.mcap` / `.db3` file, storage MCAP or SQLite3, and bags rosbag2 compressed with
//! zstd (`--compression-mode file`: each storage file `*.zstd`, decompressed into a
//! temporary file while it is read; `message`: each message's data).
//!
//! Messages are visited one at a time, in storage order, straight from the files (MCAP is
//! read through a buffer, SQLite rows are streamed), so memory stays flat with bag length.
//! When a file is truncated or corrupt, every message before the damage is visited, the
//! rest of that file is lost, reading goes on with the bag's next file (a split bag), and
//! the error says where reading stopped in each damaged file.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::panic_guard::catch_quietly;
use crate::text_file::{read_limited, MAX_BAG_METADATA_BYTES};

/// Storage plugins this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Mcap,
    Sqlite3,
}

/// rosbag2's bag-level compression (metadata.yaml `compression_mode`, format zstd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// Each storage file compressed whole (`bag_0.mcap.zstd`).
    File,
    /// Each message's serialized data compressed alone.
    Message,
}

impl Compression {
    /// As `bag info` shows it.
    pub fn describe(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::File => "zstd, per file",
            Compression::Message => "zstd, per message",
        }
    }
}

/// The file extension of zstd-compressed storage files.
const ZSTD_EXTENSION: &str = "zstd";

/// The first bytes of a zstd frame (its magic number, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Storage {
    pub fn identifier(self) -> &'static str {
        match self {
            Storage::Mcap => "mcap",
            Storage::Sqlite3 => "sqlite3",
        }
    }

    /// The storage of a file by its name; a `.zstd` file is that of the name inside.
    fn of_file(path: &Path) -> Option<Storage> {
        if is_zstd(path) {
            return Storage::of_file(Path::new(path.file_stem()?));
        }
        match path.extension()?.to_str()? {
            "mcap" => Some(Storage::Mcap),
            "db3" => Some(Storage::Sqlite3),
            _ => None,
        }
    }
}

/// Why a bag cannot be read (or stopped being readable).
#[derive(Debug, thiserror::Error)]
pub enum BagError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bag as a whole is unusable (no metadata.yaml, unknown storage, ...).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A storage file is damaged; `messages_read` messages of it were read before.
    #[error("{path}: reading stopped after {messages_read} message(s) of this file: {message}")]
    Corrupt {
        path: PathBuf,
        messages_read: u64,
        message: String,
    },
}

type Result<T> = std::result::Result<T, BagError>;

/// One topic of a bag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// ROS type, e.g. `sensor_msgs/msg/Image`.
    pub type_name: String,
    pub message_count: u64,
    /// rosbag2's `offered_qos_profiles` ([`super::qos`]); empty when not recorded. Those of
    /// several recordings of one topic (MCAP channels, SQLite connections) together
    /// ([`super::qos::merge`]).
    pub offered_qos_profiles: String,
}

/// What `bag info` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct BagInfo {
    pub storage: Storage,
    pub files: Vec<PathBuf>,
    pub size_bytes: u64,
    pub topics: Vec<TopicInfo>,
    pub message_count: u64,
    /// Log time of the first message and the span to the last, nanoseconds.
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Set when the counts come from reading a damaged file: where reading stopped (the
    /// counts cover the messages before it); or when storage files metadata.yaml lists
    /// are not there (its counts include their messages, which cannot be read).
    pub damage: Option<String>,
}

/// An MCAP metadata record: a name and string keys and values (how the bag was made, say:
/// `bag process` writes one named `bayes_perception`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRecord {
    pub name: String,
    pub entries: BTreeMap<String, String>,
}

/// What reading a bag meets, in storage order.
#[derive(Debug)]
pub enum BagEvent<'a, 'b> {
    Message(&'a BagMessage<'b>),
    /// A storage file is damaged ([`BagError::Corrupt`]): the messages of it before the
    /// damage were visited, the rest of it is lost; reading goes on with the next file.
    Damage(BagError),
}

/// A message definition as a bag holds it: its encoding (`ros2msg`, `ros2idl`) and text.
pub type Definition = (String, Vec<u8>);

/// How a topic was recorded beyond its name and type: what a copy of its messages into
/// another bag keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The message definition the bag holds for the type: its encoding (`ros2msg`,
    /// `ros2idl`) and text. None where the bag has none (SQLite bags before Iron, a
    /// recorder that did not find it).
    pub definition: Option<Definition>,
    /// rosbag2's `offered_qos_profiles` of the topic ([`super::qos`]); empty when not
    /// recorded.
    pub offered_qos_profiles: String,
}

impl Recorded {
    /// Whether a publisher offered durability transient_local (`/tf_static`, a map).
    pub fn is_latched(&self) -> bool {
        super::qos::is_latched(&self.offered_qos_profiles)
    }
}

/// A message as stored: CDR bytes and the time it was logged.
#[derive(Debug, Clone, Copy)]
pub struct BagMessage<'a> {
    pub topic: &'a str,
    pub type_name: &'a str,
    /// Nanoseconds since the epoch (rosbag2's receive time).
    pub log_time: u64,
    /// When the publisher sent it (MCAP's publish time; the log time where the storage
    /// does not keep one).
    pub publish_time: u64,
    pub data: &'a [u8],
    /// How its topic was recorded (shared by the topic's messages).
    pub recorded: &'a std::sync::Arc<Recorded>,
    /// Why this message's data cannot be read though the file around it can (a
    /// compressed message that does not decompress, an MCAP channel whose messages are
    /// not CDR); `data` is then empty. A visitor counts it as a skipped message (never
    /// copies it) and reading goes on.
    pub unreadable: Option<&'a str>,
}

/// An opened bag: where its files are and how they are stored.
#[derive(Debug)]
pub struct BagReader {
    path: PathBuf,
    storage: Storage,
    compression: Compression,
    files: Vec<PathBuf>,
    /// Those of `files` metadata.yaml lists that are not there: damage, met where they
    /// would be read.
    missing: Vec<PathBuf>,
    metadata: Option<Metadata>,
    /// A single compressed file, once decompressed: kept while the reader lives, since
    /// without metadata.yaml it is read twice (`info`, then the messages).
    decompressed_single: std::sync::Mutex<Option<std::sync::Arc<Decompressed>>>,
}

/// A storage file decompressed into a temporary file, and why decompressing stopped early
/// (damage), if it did.
type Decompressed = (tempfile::NamedTempFile, Option<String>);

#[derive(Debug, Clone, Deserialize)]
struct MetadataFile {
    rosbag2_bagfile_information: Metadata,
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    /// The metadata format's version (rosbag2 wrote 1 to 3 before its paths became
    /// relative to the bag directory); absent: taken as current.
    #[serde(default)]
    version: Option<u32>,
    storage_identifier: String,
    relative_file_paths: Vec<String>,
    #[serde(default)]
    duration: Option<Nanoseconds>,
    #[serde(default)]
    starting_time: Option<NanosecondsSinceEpoch>,
    #[serde(default)]
    message_count: u64,
    #[serde(default)]
    topics_with_message_count: Vec<TopicWithCount>,
    #[serde(default)]
    compression_format: String,
    #[serde(default)]
    compression_mode: String,
}

impl Metadata {
    /// The bag's compression; an unknown mode or a format other than zstd is refused.
    fn compression(&self) -> std::result::Result<Compression, String> {
        let mode = self.compression_mode.to_ascii_lowercase();
        let compression = match mode.as_str() {
            "" | "none" => return Ok(Compression::None),
            "file" => Compression::File,
            "message" => Compression::Message,
            other => {
                return Err(format!(
                    "compression mode `{other}` is unknown (file and message are)"
                ))
            }
        };
        if !self.compression_format.eq_ignore_ascii_case("zstd") {
            return Err(format!(
                "compression format `{}` is not supported (zstd is)",
                self.compression_format
            ));
        }
        Ok(compression)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Nanoseconds {
    nanoseconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct NanosecondsSinceEpoch {
    nanoseconds_since_epoch: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct TopicWithCount {
    topic_metadata: TopicMetadata,
    message_count: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct TopicMetadata {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    /// YAML text (rosbag2 up to metadata version 8, and the storage files) or a YAML list.
    #[serde(default)]
    offered_qos_profiles: serde_yaml::Value,
}

impl TopicMetadata {
    fn offered_qos_profiles(&self) -> String {
        match &self.offered_qos_profiles {
            serde_yaml::Value::String(text) => text.clone(),
            list @ serde_yaml::Value::Sequence(_) => serde_yaml::to_string(list)
                .map(|text| text.trim_end().to_owned())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// Where a storage file metadata.yaml lists as `listed` is, in bag directory `dir`:
/// relative to the directory, or with metadata versions 1 to 3 to its parent (their paths
/// start with the directory's name: `bag/bag_0.db3`), as rosbag2 resolves them; else the
/// file of that name in the directory (a bag of those versions renamed, or moved after it
/// was written with absolute paths), as the rosbags library reads them. `None` if neither
/// is a file.
fn storage_file(dir: &Path, listed: &str, version: Option<u32>) -> Option<PathBuf> {
    let base = match version {
        Some(v) if v < 4 => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    let by_name = Path::new(listed).file_name().map(|name| dir.join(name));
    std::iter::once(base.join(listed))
        .chain(by_name)
        .find(|f| f.is_file())
}

impl BagReader {
    /// Opens a bag directory (with metadata.yaml) or a single `.mcap` / `.db3` file.
    pub fn open(path: &Path) -> Result<Self> {
        let invalid = |message: String| BagError::Invalid {
            path: path.to_owned(),
            message,
        };
        if path.is_file() {
            let storage = Storage::of_file(path).ok_or_else(|| {
                invalid(
                    "not a bag: expected a directory, a .mcap or a .db3 file (or .mcap.zstd, \
                     .db3.zstd)"
                        .into(),
                )
            })?;
            let mut reader = BagReader {
                path: path.to_owned(),
                storage,
                compression: Compression::None,
                files: vec![path.to_owned()],
                missing: Vec::new(),
                metadata: None,
                decompressed_single: Default::default(),
            };
            // Without metadata.yaml to say so: a whole file by its name, compressed
            // messages by their data.
            reader.compression = if is_zstd(path) {
                Compression::File
            } else if reader.first_message_is_zstd() {
                Compression::Message
            } else {
                Compression::None
            };
            return Ok(reader);
        }
        if !path.is_dir() {
            return Err(invalid("does not exist".into()));
        }
        let meta_path = path.join("metadata.yaml");
        if !meta_path.is_file() {
            return Err(invalid(
                "no metadata.yaml: a rosbag2 directory needs one (recreate it with `ros2 bag reindex`, \
                 or pass the .mcap / .db3 file itself)"
                    .into(),
            ));
        }
        let text =
            read_limited(&meta_path, MAX_BAG_METADATA_BYTES).map_err(|source| BagError::Io {
                path: meta_path.clone(),
                source,
            })?;
        let metadata = serde_yaml::from_str::<MetadataFile>(&text)
            .map_err(|e| BagError::Invalid {
                path: meta_path.clone(),
                message: e.to_string(),
            })?
            .rosbag2_bagfile_information;
        let storage = match metadata.storage_identifier.as_str() {
            "mcap" => Storage::Mcap,
            "sqlite3" => Storage::Sqlite3,
            other => {
                return Err(invalid(format!(
                    "storage `{other}` is not supported (mcap and sqlite3 are)"
                )))
            }
        };
        let compression = metadata.compression().map_err(|m| BagError::Invalid {
            path: meta_path.clone(),
            message: m,
        })?;
        // A missing file of several is damage (reading goes on with the others); with
        // none there, there is no bag to read.
        let mut missing = Vec::new();
        let files: Vec<PathBuf> = metadata
            .relative_file_paths
            .iter()
            .map(|f| {
                storage_file(path, f, metadata.version).unwrap_or_else(|| {
                    missing.push(path.join(f));
                    path.join(f)
                })
            })
            .collect();
        if !files.is_empty() && missing.len() == files.len() {
            return Err(invalid(format!(
                "storage file {} listed in metadata.yaml is missing{}",
                missing[0].display(),
                match missing.len() {
                    1 => String::new(),
                    n => format!(" (and the {} other(s): none is there)", n - 1),
                }
            )));
        }
        Ok(BagReader {
            path: path.to_owned(),
            storage,
            compression,
            files,
            missing,
            metadata: Some(metadata),
            decompressed_single: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The MCAP metadata records of the bag's first storage file, as its summary indexes
    /// them. None for SQLite storage, a compressed storage file or a file without a
    /// summary (a recording cut short).
    pub fn metadata_records(&self) -> Vec<MetadataRecord> {
        match (self.storage, self.files.first()) {
            (Storage::Mcap, Some(first)) if !is_zstd(first) => mcap_metadata_records(first),
            _ => Vec::new(),
        }
    }

    /// Topics, counts and times: from metadata.yaml when there is one, otherwise from the
    /// storage file (MCAP summary or SQLite tables; counted by reading when needed).
    pub fn info(&self) -> Result<BagInfo> {
        let size_bytes = self
            .files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        // Every source below gives the same BagInfo; a bag without messages has no span,
        // whatever its start says (rosbag2 writes INT64_MAX there).
        let bag_info =
            |topics, message_count: u64, start_ns: u64, duration_ns: u64, damage| BagInfo {
                storage: self.storage,
                files: self.files.clone(),
                size_bytes,
                topics,
                message_count,
                start_ns: if message_count > 0 { start_ns } else { 0 },
                duration_ns: if message_count > 0 { duration_ns } else { 0 },
                damage,
            };
        if let Some(meta) = &self.metadata {
            let topics = meta
                .topics_with_message_count
                .iter()
                .map(|t| TopicInfo {
                    name: t.topic_metadata.name.clone(),
                    type_name: t.topic_metadata.type_name.clone(),
                    message_count: t.message_count,
                    offered_qos_profiles: t.topic_metadata.offered_qos_profiles(),
                })
                .collect();
            return Ok(bag_info(
                topics,
                meta.message_count,
                meta.starting_time
                    .as_ref()
                    .map_or(0, |t| t.nanoseconds_since_epoch),
                meta.duration.as_ref().map_or(0, |d| d.nanoseconds),
                self.missing_files(),
            ));
        }
        // No metadata: an MCAP file's summary (its statistics), as metadata.yaml would be
        // read, without reading the messages (a whole bag's worth, and decompressing
        // it, before `bag process` reads it again).
        if let (Storage::Mcap, Compression::None | Compression::Message, [file]) =
            (self.storage, self.compression, &self.files[..])
        {
            if let Some((topics, start_ns, end_ns)) = mcap_statistics(file) {
                let message_count = topics.iter().map(|t| t.message_count).sum();
                let duration_ns = end_ns.saturating_sub(start_ns);
                return Ok(bag_info(topics, message_count, start_ns, duration_ns, None));
            }
        }
        // Otherwise count by reading (fast: no message is decoded).
        let mut counts: TopicCounts = BTreeMap::new();
        let (mut first, mut last) = (u64::MAX, 0u64);
        let damage = match self.read(|m| {
            count_topic(
                &mut counts,
                m.topic,
                m.type_name,
                1,
                &m.recorded.offered_qos_profiles,
            );
            first = first.min(m.log_time);
            last = last.max(m.log_time);
            ControlFlow::Continue(())
        }) {
            Ok(()) => None,
            Err(e @ BagError::Corrupt { .. }) => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        let topics = topic_infos(counts);
        let message_count = topics.iter().map(|t| t.message_count).sum();
        Ok(bag_info(
            topics,
            message_count,
            first,
            last.saturating_sub(first),
            damage,
        ))
    }

    /// The storage files metadata.yaml lists that are not there, as [`BagInfo::damage`]
    /// says it.
    fn missing_files(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            let names: Vec<String> = self
                .missing
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            format!(
                "storage file(s) listed in metadata.yaml not there: {} (the counts are \
                 metadata.yaml's; their messages cannot be read)",
                names.join(", ")
            )
        })
    }

    /// Visits every message in storage order until `visit` breaks. A damaged file ends
    /// its own reading after every readable message of it was visited; the bag's later
    /// files are read still, and the damage is returned at the end as
    /// [`BagError::Corrupt`] (that of the first damaged file, naming the others). A
    /// message whose own data cannot be read is visited with [`BagMessage::unreadable`]
    /// set.
    pub fn read(&self, mut visit: impl FnMut(&BagMessage) -> ControlFlow<()>) -> Result<()> {
        let mut damage: Vec<BagError> = Vec::new();
        let read = self.read_events(|event| match event {
            BagEvent::Message(m) => visit(m),
            BagEvent::Damage(e) => {
                damage.push(e);
                ControlFlow::Continue(())
            }
        });
        match read {
            Err(e) => Err(damage_met_before(e, &damage)),
            Ok(()) => combined_damage(damage).map_or(Ok(()), Err),
        }
    }

    /// [`read`](Self::read) with damage handed to `visit` as it is met (between the
    /// damaged file's last readable message and the next file's first), for readers that
    /// must know which messages came before it. Errors other than damage (the system
    /// failing to read a file) end reading and are returned.
    pub fn read_events(&self, mut visit: impl FnMut(BagEvent) -> ControlFlow<()>) -> Result<()> {
        if self.compression == Compression::Message {
            let mut visit_decompressed = |event: BagEvent| -> std::result::Result<_, String> {
                let m = match event {
                    BagEvent::Message(m) if m.unreadable.is_none() => m,
                    other => return Ok(visit(other)),
                };
                Ok(match decompress_message(m.data) {
                    Ok(data) => visit(BagEvent::Message(&BagMessage { data: &data, ..*m })),
                    Err(reason) => visit(BagEvent::Message(&BagMessage {
                        data: &[],
                        unreadable: Some(&reason),
                        ..*m
                    })),
                })
            };
            return self.read_files(&mut visit_decompressed);
        }
        self.read_files(&mut |event: BagEvent| Ok(visit(event)))
    }

    /// Whether the first message's data is a zstd frame (how `--compression-mode message`
    /// stores it), not CDR, whose encapsulation header starts with a zero byte. A file
    /// whose first message cannot be read here is taken as uncompressed; reading it
    /// reports the damage (as damage of the storage file, not of a compressed message).
    fn first_message_is_zstd(&self) -> bool {
        let mut zstd = false;
        self.read_files(&mut |event: BagEvent| {
            // A message of a channel this reader cannot read (not CDR) says nothing.
            match event {
                BagEvent::Message(m) if m.unreadable.is_none() => {
                    zstd = m.data.starts_with(&ZSTD_MAGIC);
                    Ok(ControlFlow::Break(()))
                }
                _ => Ok(ControlFlow::Continue(())),
            }
        })
        .ok();
        zstd
    }

    /// [`read_events`](Self::read_events) with a visitor that may find a message
    /// damaged, which ends reading of its file like damage of the file.
    fn read_files(
        &self,
        visit: &mut impl FnMut(BagEvent) -> std::result::Result<ControlFlow<()>, String>,
    ) -> Result<()> {
        for file in &self.files {
            if self.missing.contains(file) {
                let damage = BagError::Corrupt {
                    path: file.clone(),
                    messages_read: 0,
                    message: "listed in metadata.yaml, but not there".into(),
                };
                match visit(BagEvent::Damage(damage)) {
                    Ok(ControlFlow::Continue(())) => continue,
                    _ => break,
                }
            }
            // Files rosbag2 compressed whole; the one a killed recording left open is not.
            let decompressed = if !is_zstd(file) {
                None
            } else if self.metadata.is_none() {
                let mut single = self
                    .decompressed_single
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if single.is_none() {
                    *single = Some(std::sync::Arc::new(decompress_file(file)?));
                }
                single.clone()
            } else {
                // One file of a bag at a time: the temporary one goes when it is read.
                Some(std::sync::Arc::new(decompress_file(file)?))
            };
            let (storage_file, damage) = match decompressed.as_deref() {
                Some((temp, damage)) => (temp.path(), damage.as_deref()),
                None => (file.as_path(), None),
            };
            let mut read = 0u64;
            let mut counted = |m: &BagMessage| {
                read += 1;
                visit(BagEvent::Message(m))
            };
            let flow = match self.storage {
                Storage::Mcap => read_mcap(storage_file, &mut counted),
                Storage::Sqlite3 => read_sqlite(storage_file, &mut counted),
            };
            // Errors name the bag's file, not the temporary one; a compressed file cut
            // short is read as far as it decompressed, then reported as damaged there.
            let flow = match flow {
                Err(BagError::Corrupt {
                    messages_read,
                    message,
                    ..
                }) => Err(BagError::Corrupt {
                    path: file.clone(),
                    messages_read,
                    message: damage.map_or(message, |d| format!("{d} (decompressing)")),
                }),
                Err(BagError::Io { source, .. }) => Err(BagError::Io {
                    path: file.clone(),
                    source,
                }),
                Ok(ControlFlow::Continue(())) if damage.is_some() => Err(BagError::Corrupt {
                    path: file.clone(),
                    messages_read: read,
                    message: format!("{} (decompressing)", damage.unwrap_or_default()),
                }),
                other => other,
            };
            let flow = match flow {
                // The rest of this file is lost; the bag's next file may be whole.
                Err(damage @ BagError::Corrupt { .. }) => {
                    visit(BagEvent::Damage(damage)).unwrap_or(ControlFlow::Break(()))
                }
                other => other?,
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// The damage of several storage files as one [`BagError::Corrupt`]: the first file's,
/// naming the later ones; `None` when there was none.
pub fn combined_damage(damage: Vec<BagError>) -> Option<BagError> {
    let mut damage = damage.into_iter();
    match damage.next()? {
        BagError::Corrupt {
            path,
            messages_read,
            mut message,
        } => {
            let later: Vec<String> = damage.map(|e| e.to_string()).collect();
            if !later.is_empty() {
                message = format!("{message}; later files damaged too: {}", later.join("; "));
            }
            Some(BagError::Corrupt {
                path,
                messages_read,
                message,
            })
        }
        other => Some(other),
    }
}

/// `error`, which ended reading after `damage` was met: the damage is logged, since the
/// error (not the damage) is what the caller reports.
pub fn damage_met_before(error: BagError, damage: &[BagError]) -> BagError {
    for d in damage {
        log::warn!("input damaged before reading stopped: {d}");
    }
    error
}

/// Messages and the distinct QoS recordings by topic and type.
type TopicCounts = BTreeMap<(String, String), (u64, Vec<String>)>;

/// Adds `count` messages of `topic`, and its QoS profiles where they are new.
fn count_topic(counts: &mut TopicCounts, topic: &str, type_name: &str, count: u64, qos: &str) {
    let (total, profiles) = counts
        .entry((topic.to_owned(), type_name.to_owned()))
        .or_default();
    *total += count;
    if !profiles.iter().any(|known| known == qos) {
        profiles.push(qos.to_owned());
    }
}

/// The counts as the topics of a [`BagInfo`].
fn topic_infos(counts: TopicCounts) -> Vec<TopicInfo> {
    counts
        .into_iter()
        .map(|((name, type_name), (message_count, profiles))| TopicInfo {
            name,
            type_name,
            message_count,
            offered_qos_profiles: super::qos::merge(profiles.iter().map(String::as_str)),
        })
        .collect()
}

/// An MCAP file's summary section, read from the end of the file; `None` when it has none
/// (a file cut short) or it is damaged.
fn mcap_summary(path: &Path) -> Option<mcap::Summary> {
    use mcap::sans_io::summary_reader::{SummaryReadEvent, SummaryReader, SummaryReaderOptions};
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut reader = SummaryReader::new_with_options(
        SummaryReaderOptions::default()
            .with_file_size(size)
            .with_record_length_limit(MAX_MCAP_RECORD),
    );
    // mcap's parsers can panic on damaged data (see read_mcap): no summary, then.
    crate::panic_guard::catch_quietly(move || -> Option<mcap::Summary> {
        while let Some(event) = reader.next_event() {
            match event.ok()? {
                SummaryReadEvent::ReadRequest(need) => {
                    let n = file.read(reader.insert(need)).ok()?;
                    reader.notify_read(n);
                }
                SummaryReadEvent::SeekRequest(to) => reader.notify_seeked(file.seek(to).ok()?),
            }
        }
        reader.finish()
    })
    .ok()
    .flatten()
}

/// The metadata records an MCAP file's summary indexes, in file order; those that do not
/// read back as one (a damaged index) are left out. What a damaged or hostile index can
/// make this read is bounded: records within the file and of at most 16 MiB, each read
/// once, at most [`MAX_METADATA_RECORDS`] of them, and no more bytes in all than the file
/// holds.
fn mcap_metadata_records(path: &Path) -> Vec<MetadataRecord> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(summary) = mcap_summary(path) else {
        return Vec::new();
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let Ok(file_len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let mut indexes: Vec<_> = summary
        .metadata_indexes
        .iter()
        .filter(|i| i.length <= MAX_METADATA_RECORD_BYTES)
        .filter(|i| {
            i.offset
                .checked_add(i.length)
                .is_some_and(|end| end <= file_len)
        })
        .collect();
    indexes.sort_by_key(|i| i.offset);
    indexes.dedup_by_key(|i| i.offset);
    let mut records = Vec::new();
    let mut read = 0u64;
    for index in indexes.into_iter().take(MAX_METADATA_RECORDS) {
        read += index.length;
        if read > file_len {
            break;
        }
        let mut bytes = vec![0; index.length as usize];
        if file.seek(SeekFrom::Start(index.offset)).is_err() || file.read_exact(&mut bytes).is_err()
        {
            continue;
        }
        let record =
            crate::panic_guard::catch_quietly(move || match mcap::read::LinearReader::sans_magic(
                &bytes,
            )
            .next()
            {
                Some(Ok(mcap::records::Record::Metadata(m))) => Some(m),
                _ => None,
            });
        if let Ok(Some(m)) = record {
            records.push(MetadataRecord {
                name: m.name,
                entries: m.metadata,
            });
        }
    }
    records
}

/// The topics (with their types and message counts) and the first and last log times an
/// MCAP file's summary section states, read from the end of the file; `None` when it has
/// no summary with statistics (a file cut short, a writer that leaves them out) or the
/// summary is damaged, in which case the messages are counted by reading them.
fn mcap_statistics(path: &Path) -> Option<(Vec<TopicInfo>, u64, u64)> {
    let summary = mcap_summary(path)?;
    let stats = summary.stats.as_ref()?;
    let mut counts: TopicCounts = BTreeMap::new();
    // In channel order: the summary's map has none.
    let mut channels: Vec<_> = summary.channels.iter().collect();
    channels.sort_by_key(|(id, _)| **id);
    for (id, channel) in channels {
        let type_name = channel.schema.as_ref().map_or("", |s| s.name.as_str());
        let count = stats.channel_message_counts.get(id).copied().unwrap_or(0);
        let qos = channel.metadata.get("offered_qos_profiles");
        count_topic(
            &mut counts,
            &channel.topic,
            type_name,
            count,
            qos.map_or("", String::as_str),
        );
    }
    // Statistics that do not add up are not trusted.
    if counts.values().map(|(n, _)| n).sum::<u64>() != stats.message_count {
        return None;
    }
    Some((
        topic_infos(counts),
        stats.message_start_time,
        stats.message_end_time,
    ))
}

/// An MCAP channel as its messages are visited.
struct McapChannel {
    topic: String,
    /// Its schema's name (the ROS type); empty without a schema.
    type_name: String,
    /// Why its messages cannot be read (not CDR).
    foreign: Option<String>,
    recorded: std::sync::Arc<Recorded>,
}

fn read_mcap(
    path: &Path,
    visit: &mut impl FnMut(&BagMessage) -> std::result::Result<ControlFlow<()>, String>,
) -> Result<ControlFlow<()>> {
    let file = std::fs::File::open(path).map_err(|source| BagError::Io {
        path: path.to_owned(),
        source,
    })?;
    // Read, not mapped: the reader copies every byte into its own buffer either way, and a
    // mapped file that another process truncates, or whose disk fails, ends the process
    // (SIGBUS) where a read returns an error.
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    let corrupt = |messages_read: u64, message: String| BagError::Corrupt {
        path: path.to_owned(),
        messages_read,
        message,
    };
    // The sans-I/O reader with a record size limit: mcap's MessageStream reads chunk
    // contents without one, so a record length field inside a chunk could ask for an
    // allocation of any size (found by fuzzing, fuzz/ bag_mcap).
    // Each chunk is checked against its CRC before any of its messages is visited: bit rot
    // in an uncompressed chunk is damage where reading stops, not wrong pixels passed on
    // (checked at the chunk's end, its messages would already have been used). The cost:
    // a file cut short inside a chunk is read up to the last whole chunk. A chunk written
    // without a CRC (0; rosbag2's recorder by default) cannot be checked and is read as it
    // stands.
    let mut reader = mcap::sans_io::LinearReader::new_with_options(
        mcap::sans_io::LinearReaderOptions::default()
            .with_record_length_limit(MAX_MCAP_RECORD)
            .with_prevalidate_chunk_crcs(true),
    );
    // Schema id -> (name, definition); channel id -> what its messages are visited with.
    let mut schemas: HashMap<u16, (String, Option<Definition>)> = HashMap::new();
    let mut channels: HashMap<u16, McapChannel> = HashMap::new();
    let mut read = 0u64;
    loop {
        // mcap 0.26's reader can panic on damaged length fields (an unchecked subtraction
        // inside uncompressed chunks, found by fuzzing); that is damage like any other.
        let next = {
            let reader = &mut reader;
            catch_quietly(move || reader.next_event())
        };
        let event = match next {
            Ok(Some(event)) => event.map_err(|e| corrupt(read, e.to_string()))?,
            Ok(None) => break,
            Err(panic) => return Err(corrupt(read, format!("damaged MCAP data ({panic})"))),
        };
        let (opcode, data) = match event {
            mcap::sans_io::LinearReadEvent::ReadRequest(need) => {
                let n = loop {
                    match std::io::Read::read(&mut file, reader.insert(need)) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        done => {
                            break done.map_err(|source| BagError::Io {
                                path: path.to_owned(),
                                source,
                            })?
                        }
                    }
                };
                // 0: the end of the file.
                reader.notify_read(n);
                continue;
            }
            mcap::sans_io::LinearReadEvent::Record { opcode, data } => (opcode, data),
        };
        // mcap 0.26's record parser slices by length fields it does not check against the
        // record (fuzzing finding 3): its panic is damage like any other.
        let record = catch_quietly(|| mcap::parse_record(opcode, data))
            .map_err(|panic| corrupt(read, format!("damaged MCAP record ({panic})")))?
            .map_err(|e| corrupt(read, e.to_string()))?;
        match record {
            mcap::records::Record::Schema { header, data } => {
                let definition = known_definition(header.encoding, data.into_owned());
                schemas.insert(header.id, (header.name, definition));
            }
            mcap::records::Record::Channel(channel) => {
                let (type_name, definition) = match channel.schema_id {
                    0 => (String::new(), None),
                    id => schemas.get(&id).cloned().ok_or_else(|| {
                        corrupt(
                            read,
                            format!("channel {} names unknown schema {id}", channel.id),
                        )
                    })?,
                };
                // rosbag2 writes CDR; another encoding (JSON, protobuf from other MCAP
                // writers) is not this reader's, and copying it into a `cdr` channel of
                // an output bag would make that bag lie.
                let foreign = (channel.message_encoding != "cdr").then(|| {
                    format!(
                        "message encoding `{}` is not CDR (rosbag2's)",
                        crate::msg::encoding::shown(&channel.message_encoding)
                    )
                });
                let recorded = Recorded {
                    definition,
                    offered_qos_profiles: channel
                        .metadata
                        .get("offered_qos_profiles")
                        .cloned()
                        .unwrap_or_default(),
                };
                channels.insert(
                    channel.id,
                    McapChannel {
                        topic: channel.topic,
                        type_name,
                        foreign,
                        recorded: std::sync::Arc::new(recorded),
                    },
                );
            }
            mcap::records::Record::Message { header, data } => {
                let channel = channels.get(&header.channel_id).ok_or_else(|| {
                    corrupt(
                        read,
                        format!("message on unknown channel {}", header.channel_id),
                    )
                })?;
                let msg = BagMessage {
                    topic: &channel.topic,
                    type_name: &channel.type_name,
                    log_time: header.log_time,
                    publish_time: header.publish_time,
                    data: if channel.foreign.is_some() {
                        &[]
                    } else {
                        &data
                    },
                    recorded: &channel.recorded,
                    unreadable: channel.foreign.as_deref(),
                };
                let flow = visit(&msg).map_err(|m| corrupt(read, m))?;
                read += 1;
                if flow.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            _ => {}
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Whether a storage file is compressed whole (rosbag2's `--compression-mode file`).
fn is_zstd(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == ZSTD_EXTENSION)
}

/// Prefix of the temporary files decompressed storage files go into, before
/// `PID@HOST-`.
const TEMP_PREFIX: &str = "bayes_perception-bag-";

/// Decompresses a storage file into a temporary file in $TMPDIR, named with this process's
/// PID and the machine's name: removed when dropped, and by a later run on this machine
/// if this one is killed first. A file cut
/// short or damaged is decompressed as far as it goes; the reason it stopped comes back
/// with it. Failing to read the file or to write the temporary one is an I/O error (the
/// latter names the temporary file: $TMPDIR is full, say), not damage.
fn decompress_file(path: &Path) -> Result<Decompressed> {
    // Once per process: what killed runs left does not change while this one reads.
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_stale_temporaries);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| BagError::Io { path, source }
    };
    let input = std::fs::File::open(path).map_err(io(path))?;
    let temp_dir = std::env::temp_dir();
    if let (Some(needed), Some((free, size))) = (declared_size(&input), space(&temp_dir)) {
        if needed > free {
            // Full for now (another try may find room: 75), or never big enough (1).
            let kind = if needed > size {
                std::io::ErrorKind::Other
            } else {
                std::io::ErrorKind::StorageFull
            };
            let source = std::io::Error::new(
                kind,
                format!(
                    "{} decompresses to {} MiB and {} has {} MiB free of {} MiB; \
                     set TMPDIR to a folder with room",
                    path.display(),
                    needed >> 20,
                    temp_dir.display(),
                    free >> 20,
                    size >> 20
                ),
            );
            return Err(io(&temp_dir)(source));
        }
    }
    let suffix = path
        .file_stem()
        .and_then(|s| Path::new(s).extension())
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(
            "{TEMP_PREFIX}{}@{}-",
            std::process::id(),
            crate::process::host_name()
        ))
        .suffix(&suffix)
        .tempfile()
        .map_err(io(&temp_dir))?;
    log::info!(
        "decompressing {} into {}",
        path.display(),
        temp.path().display()
    );
    let mut decoder =
        zstd::stream::read::Decoder::new(std::io::BufReader::new(input)).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let damage = loop {
        let n = match std::io::Read::read(&mut decoder, &mut buf) {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The system could not read the file: not the data's fault.
            Err(e) if e.raw_os_error().is_some() => return Err(io(path)(e)),
            Err(e) => break Some(format!("the zstd data ends or is corrupt: {e}")),
        };
        std::io::Write::write_all(temp.as_file_mut(), &buf[..n]).map_err(io(temp.path()))?;
    };
    Ok((temp, damage))
}

/// The decompressed size a zstd file's first frame header declares (a whole file
/// compressed in one call records it; a streamed one may not), `None` when it does not
/// say or cannot be read.
fn declared_size(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    // A frame header is at most 18 bytes.
    let mut header = [0u8; 18];
    let n = file.read_at(&mut header, 0).ok()?;
    zstd::zstd_safe::get_frame_content_size(&header[..n])
        .ok()
        .flatten()
}

/// Bytes an unprivileged user may still write on the file system holding `dir`, and its
/// size.
fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes the struct on success (return 0); the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c_path.as_ptr(), &mut stat) == 0).then(|| {
            let block = stat.f_frsize as u64;
            (
                (stat.f_bavail as u64).saturating_mul(block),
                (stat.f_blocks as u64).saturating_mul(block),
            )
        })
    }
}

/// Removes the decompressed files that runs of this machine which were killed left in
/// $TMPDIR (another machine's or container's, sharing the folder, are not this one's to
/// judge by PID).
fn remove_stale_temporaries() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let host = format!("@{}-", crate::process::host_name());
    for entry in entries.flatten() {
        let name = entry.file_name();
        // `PID@HOST-`, or `PID-` as versions before 2026-12-06 named them (this host's).
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| match rest.find('@') {
                Some(_) => rest.find(&host).map(|at| &rest[..at]),
                None => rest.split_once('-').map(|(pid, _)| pid),
            })
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::process::is_gone(pid) {
            log::info!("removing {} left by a killed run", entry.path().display());
            std::fs::remove_file(entry.path()).ok();
        }
    }
}

/// One message's data as rosbag2's `--compression-mode message` stored it: a zstd frame.
/// At most [`MAX_MCAP_RECORD`] bytes come out (a message that claims or makes more is
/// damage, not an allocation of any size).
fn decompress_message(data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    // The frame header usually says the size: allocated once, exactly.
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(data) {
        if size > MAX_MCAP_RECORD as u64 {
            return Err(format!(
                "message data would decompress to {size} bytes, more than {MAX_MCAP_RECORD}"
            ));
        }
        return zstd::bulk::decompress(data, size as usize)
            .map_err(|e| format!("message data does not decompress: {e}"));
    }
    let mut out = Vec::new();
    let decoder = zstd::stream::read::Decoder::with_buffer(data)
        .map_err(|e| format!("message data is not zstd: {e}"))?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(decoder, MAX_MCAP_RECORD as u64 + 1),
        &mut out,
    )
    .map_err(|e| format!("message data does not decompress: {e}"))?;
    if out.len() > MAX_MCAP_RECORD {
        return Err(format!(
            "message data decompresses to more than {MAX_MCAP_RECORD} bytes"
        ));
    }
    Ok(out)
}

/// The most MCAP metadata records read from a file ([`BagReader::metadata_records`]).
pub const MAX_METADATA_RECORDS: usize = 64;

/// The largest MCAP metadata record read (ours are a few kB).
const MAX_METADATA_RECORD_BYTES: u64 = 16 << 20;

/// The largest MCAP record (a message, or a chunk's decompressed content) this reader
/// accepts: 1 GiB, far above any camera frame (an 8K 16-bit RGBA image is 265 MB). A
/// larger length in a file is damage, and it bounds what a damaged file can make the
/// reader allocate.
pub const MAX_MCAP_RECORD: usize = 1 << 30;

fn read_sqlite(
    path: &Path,
    visit: &mut impl FnMut(&BagMessage) -> std::result::Result<ControlFlow<()>, String>,
) -> Result<ControlFlow<()>> {
    let corrupt = |messages_read: u64, message: String| BagError::Corrupt {
        path: path.to_owned(),
        messages_read,
        message,
    };
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| corrupt(0, e.to_string()))?;
    // In time order, as rosbag2 plays a bag. The messages' rows are sorted first (their
    // row ids only) and then read one by one: sorting the rows themselves made SQLite copy
    // every message into its sorter, in memory, for a bag without rosbag2's timestamp
    // index (an old or hand-made one). A table without row ids is keyed by its `id`.
    let sorted = |key: &str| -> rusqlite::Result<Vec<i64>> {
        db.prepare(&format!(
            "SELECT {key} FROM messages ORDER BY timestamp, id"
        ))?
        .query_map([], |row| row.get(0))?
        .collect()
    };
    let (key, order) = match sorted("rowid") {
        Ok(order) => ("rowid", order),
        Err(_) => ("id", sorted("id").map_err(|e| corrupt(0, e.to_string()))?),
    };
    let topics = sqlite_topics(&db).map_err(|e| corrupt(0, e.to_string()))?;
    let mut statement = db
        .prepare(&format!(
            "SELECT topic_id, timestamp, data FROM messages WHERE {key} = ?1"
        ))
        .map_err(|e| corrupt(0, e.to_string()))?;
    let mut read = 0u64;
    for rowid in order {
        let fields = statement.query_row(
            [rowid],
            |row| -> rusqlite::Result<(Option<i64>, i64, Vec<u8>)> {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            },
        );
        let (topic_id, timestamp, data) = fields.map_err(|e| corrupt(read, e.to_string()))?;
        // A message of no topic (no topic of its id, or NULL): rosbag2 joins messages with
        // topics, so it is not played.
        let Some((topic, type_name, recorded)) = topic_id.and_then(|id| topics.get(&id)) else {
            continue;
        };
        let log_time = timestamp.max(0) as u64;
        let msg = BagMessage {
            topic,
            type_name,
            log_time,
            publish_time: log_time,
            data: &data,
            recorded,
            unreadable: None,
        };
        let flow = visit(&msg).map_err(|m| corrupt(read, m))?;
        read += 1;
        if flow.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// A message definition as a bag stores it, or `None` where it says it has none: an
/// empty encoding (MCAP), or rosbag2's `unknown` (a type its recorder did not find). Empty
/// text of a known encoding is a definition (`std_msgs/msg/Empty`'s).
fn known_definition(encoding: String, text: Vec<u8>) -> Option<Definition> {
    (!encoding.is_empty() && encoding != "unknown").then_some((encoding, text))
}

/// A SQLite bag's topic: name, type and how it was recorded.
type SqliteTopic = (String, String, std::sync::Arc<Recorded>);

/// A SQLite bag's topics by id: name, type and how it was recorded (the QoS profiles, of
/// bags since Foxy; the message definition, from the `message_definitions` table of
/// bags since Iron).
fn sqlite_topics(db: &rusqlite::Connection) -> rusqlite::Result<HashMap<i64, SqliteTopic>> {
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('topics')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let qos = if columns.iter().any(|c| c == "offered_qos_profiles") {
        "offered_qos_profiles"
    } else {
        "''"
    };
    let mut definitions: HashMap<String, Definition> = HashMap::new();
    // Absent before Iron; a table of another shape is read as none.
    if let Ok(mut statement) = db
        .prepare("SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")
    {
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        for (type_name, encoding, text) in rows.flatten() {
            if let Some(definition) = known_definition(encoding, text.into_bytes()) {
                definitions.insert(type_name, definition);
            }
        }
    }
    let mut statement = db.prepare(&format!("SELECT id, name, type, {qos} FROM topics"))?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, Option<String>>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut topics = HashMap::new();
    for row in rows {
        // A topic without a name or type is none (its messages are not read, as rosbag2's
        // join of NULLs gives nothing to play); profiles that are NULL, none recorded.
        let (id, Some(name), Some(type_name), qos) = row? else {
            continue;
        };
        let recorded = Recorded {
            definition: definitions.get(&type_name).cloned(),
            offered_qos_profiles: qos.unwrap_or_default(),
        };
        topics.insert(id, (name, type_name, std::sync::Arc::new(recorded)));
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .db3 as rosbag2 makes it, with or without its timestamp index (and, made by
    /// hand, without row ids), messages inserted out of time order and one of a topic the
    /// bag does not have: read in time order (equal stamps by id), the one without a topic
    /// left out as rosbag2 leaves it.
    #[test]
    fn sqlite_messages_are_read_in_time_order_with_or_without_the_index() {
        for (index, rowid) in [(true, true), (false, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bag_0.db3");
            let db = rusqlite::Connection::open(&path).unwrap();
            let without_rowid = if rowid { "" } else { " WITHOUT ROWID" };
            db.execute_batch(&format!(
                "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, \
                 serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
                 CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, \
                 timestamp INTEGER NOT NULL, data BLOB NOT NULL){without_rowid};
                 INSERT INTO topics VALUES (1, '/a', 'std_msgs/msg/String', 'cdr', '');
                 INSERT INTO topics VALUES (2, '/b', 'std_msgs/msg/String', 'cdr', '');"
            ))
            .unwrap();
            if index {
                db.execute_batch("CREATE INDEX timestamp_idx ON messages (timestamp ASC);")
                    .unwrap();
            }
            for (id, topic, stamp) in [(1, 1, 30), (2, 2, 10), (3, 9, 15), (4, 1, 20), (5, 2, 20)] {
                db.execute(
                    "INSERT INTO messages VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![id, topic, stamp, vec![id as u8; 3]],
                )
                .unwrap();
            }
            drop(db);
            let mut seen = Vec::new();
            BagReader::open(&path)
                .unwrap()
                .read(|m| {
                    seen.push((m.topic.to_owned(), m.log_time, m.data[0]));
                    ControlFlow::Continue(())
                })
                .unwrap();
            let expected = [("/b", 10, 2), ("/a", 20, 4), ("/b", 20, 5), ("/a", 30, 1)];
            let expected: Vec<_> = expected
                .iter()
                .map(|&(t, s, d)| (t.to_owned(), s, d))
                .collect();
            assert_eq!(seen, expected, "index {index}, row ids {rowid}");
        }
    }

    /// How SQLite bags of every age say how a topic was recorded: an old one without the
    /// `offered_qos_profiles` column (none recorded), a NULL there, Iron's
    /// `message_definitions` (rosbag2's `unknown` with no text: none); a message whose
    /// topic_id is NULL is one of no topic, left out as rosbag2's join leaves it.
    #[test]
    fn sqlite_topics_of_every_age_with_their_definitions_and_qos() {
        let message = |db: &rusqlite::Connection, id: i64, topic: Option<i64>| {
            db.execute(
                "INSERT INTO messages VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, topic, 10 * id, vec![0u8, 1, 0, 0]],
            )
            .unwrap();
        };
        let read = |path: &Path| {
            let mut seen = Vec::new();
            BagReader::open(path)
                .unwrap()
                .read(|m| {
                    seen.push((
                        m.topic.to_owned(),
                        m.log_time,
                        m.publish_time,
                        (**m.recorded).clone(),
                    ));
                    ControlFlow::Continue(())
                })
                .unwrap();
            seen
        };
        let dir = tempfile::tempdir().unwrap();
        // Foxy-era: no QoS column, no definitions.
        let old = dir.path().join("old.db3");
        let db = rusqlite::Connection::open(&old).unwrap();
        db.execute_batch(
            "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, \
             serialization_format TEXT NOT NULL);
             CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER, \
             timestamp INTEGER NOT NULL, data BLOB NOT NULL);
             INSERT INTO topics VALUES (1, '/a', 'std_msgs/msg/String', 'cdr');",
        )
        .unwrap();
        message(&db, 1, Some(1));
        message(&db, 2, None);
        drop(db);
        assert_eq!(
            read(&old),
            [("/a".to_owned(), 10, 10, Recorded::default())],
            "a NULL topic_id is no topic's message"
        );
        // Iron and later: QoS (one NULL) and definitions (one `unknown`, one empty, as
        // std_msgs/msg/Empty's is); a topic without a type (made by hand) is none.
        let new = dir.path().join("new.db3");
        let db = rusqlite::Connection::open(&new).unwrap();
        db.execute_batch(
            "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT, type TEXT, \
             serialization_format TEXT NOT NULL, offered_qos_profiles TEXT);
             CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, \
             timestamp INTEGER NOT NULL, data BLOB NOT NULL);
             CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, \
             encoding TEXT NOT NULL, encoded_message_definition TEXT NOT NULL, \
             type_description_hash TEXT NOT NULL);
             INSERT INTO topics VALUES (1, '/a', 'std_msgs/msg/String', 'cdr', '- durability: 1');
             INSERT INTO topics VALUES (2, '/b', 'my_msgs/msg/Thing', 'cdr', NULL);
             INSERT INTO topics VALUES (3, '/c', NULL, 'cdr', '');
             INSERT INTO topics VALUES (4, '/d', 'std_msgs/msg/Empty', 'cdr', '');
             INSERT INTO message_definitions VALUES (1, 'std_msgs/msg/String', 'ros2msg', \
             'string data', '');
             INSERT INTO message_definitions VALUES (2, 'my_msgs/msg/Thing', 'unknown', '', '');
             INSERT INTO message_definitions VALUES (3, 'std_msgs/msg/Empty', 'ros2msg', '', '');",
        )
        .unwrap();
        for (id, topic) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
            message(&db, id, Some(topic));
        }
        drop(db);
        let seen = read(&new);
        let topics: Vec<&str> = seen.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(topics, ["/a", "/b", "/d"], "a topic without a type is none");
        assert_eq!(seen[2].3.definition, Some(("ros2msg".into(), Vec::new())));
        assert_eq!(
            seen[0].3,
            Recorded {
                definition: Some(("ros2msg".into(), b"string data".to_vec())),
                offered_qos_profiles: "- durability: 1".into(),
            }
        );
        assert!(seen[0].3.is_latched());
        assert_eq!(seen[1].3, Recorded::default(), "unknown, NULL: none");
    }

    #[test]
    fn a_compressed_message_decompresses_and_damage_is_an_error_not_a_panic() {
        let data = b"sensor data ".repeat(100);
        let frame = zstd::encode_all(&data[..], 3).unwrap();
        assert!(frame.starts_with(&ZSTD_MAGIC));
        assert_eq!(decompress_message(&frame).unwrap(), data);
        assert!(decompress_message(b"not zstd at all").is_err());
        assert!(decompress_message(&frame[..frame.len() / 2]).is_err());
        assert!(decompress_message(&[]).is_err());
    }

    /// Without metadata.yaml a compressed file is read for `info` and again for the
    /// messages: it is decompressed once for both.
    #[test]
    fn a_single_compressed_file_is_decompressed_once_per_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = crate::bag::BagWriter::create(&dir.path().join("bag")).unwrap();
        let image = crate::bag::cdr::CdrMessage::to_cdr(&crate::msg::Image::default());
        for i in 0..3u64 {
            w.write("/a", "sensor_msgs/msg/Image", 10 + i, &image)
                .unwrap();
        }
        w.finish().unwrap();
        let mcap = dir.path().join("bag/bag_0.mcap");
        let zstd = dir.path().join("single.mcap.zstd");
        let data = std::fs::read(&mcap).unwrap();
        std::fs::write(&zstd, zstd::encode_all(&data[..], 3).unwrap()).unwrap();
        let reader = BagReader::open(&zstd).unwrap();
        assert_eq!(reader.compression(), Compression::File);
        let info = reader.info().unwrap();
        assert_eq!(info.message_count, 3);
        let first = reader.decompressed_single.lock().unwrap().clone().unwrap();
        let mut n = 0;
        reader
            .read(|_| {
                n += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(n, 3);
        let second = reader.decompressed_single.lock().unwrap().clone().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &second));
        let temp = first.0.path().to_owned();
        drop((first, second, reader));
        assert!(!temp.exists(), "the temporary file outlived its reader");
    }

    /// A killed run's decompressed file goes; this process's own and others' stay.
    #[test]
    fn stale_decompressed_files_of_killed_runs_are_swept() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = std::env::temp_dir();
        let host = crate::process::host_name();
        let stale = tmp.join(format!("{TEMP_PREFIX}{dead}@{host}-sweeptest.mcap"));
        let ours = tmp.join(format!(
            "{TEMP_PREFIX}{}@{host}-sweeptest.mcap",
            std::process::id()
        ));
        let other = tmp.join(format!("{TEMP_PREFIX}notapid@{host}-sweeptest.mcap"));
        // A dead PID of this machine is another container's live one there.
        let elsewhere = tmp.join(format!("{TEMP_PREFIX}{dead}@not-{host}-sweeptest.mcap"));
        // Named as before 2026-12-06: PID only, this host's.
        let old_style = tmp.join(format!("{TEMP_PREFIX}{dead}-sweeptest.mcap"));
        let files = [&stale, &ours, &other, &elsewhere, &old_style];
        for file in files {
            std::fs::write(file, b"x").unwrap();
        }
        remove_stale_temporaries();
        let left: Vec<bool> = files.iter().map(|f| f.exists()).collect();
        for file in files {
            std::fs::remove_file(file).ok();
        }
        assert_eq!(
            left,
            [false, true, true, true, false],
            "a killed run's file stays, or one of a live run, not ours or another machine's went"
        );
    }

    /// A file whose header declares more than $TMPDIR has free is refused before writing,
    /// naming the sizes: as a full disk (transient) while it would fit an emptier $TMPDIR,
    /// as a plain failure when it is larger than the whole file system.
    #[test]
    fn a_file_larger_than_free_temporary_space_is_refused_before_writing() {
        use crate::error::is_transient_io;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.mcap.zstd");
        let data = vec![0u8; 4096];
        std::fs::write(&file, zstd::bulk::compress(&data, 3).unwrap()).unwrap();
        let input = std::fs::File::open(&file).unwrap();
        assert_eq!(declared_size(&input), Some(4096));
        let (free, size) = space(&std::env::temp_dir()).unwrap();
        assert!(0 < free && free <= size, "{free} of {size}");
        // A frame header declaring `bytes`: magic, descriptor (8-byte content size, not
        // single-segment), window descriptor, the size.
        let refused = |bytes: u64| {
            let mut header = ZSTD_MAGIC.to_vec();
            header.extend([0xC0, 0x00]);
            header.extend(bytes.to_le_bytes());
            std::fs::write(&file, &header).unwrap();
            assert_eq!(
                declared_size(&std::fs::File::open(&file).unwrap()),
                Some(bytes)
            );
            let err = match decompress_file(&file) {
                Err(e) => e,
                Ok(_) => panic!("a file declaring {bytes} bytes was decompressed"),
            };
            assert!(err.to_string().contains("set TMPDIR"), "{err}");
            match err {
                BagError::Io { source, .. } => source,
                other => panic!("not an I/O error: {other}"),
            }
        };
        assert!(!is_transient_io(&refused(1 << 60)), "1 EiB never fits");
        if free < size {
            let source = refused(size);
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
            assert!(is_transient_io(&source));
        }
    }

    #[test]
    fn compressed_storage_files_are_recognised_by_their_inner_name() {
        let of = |name: &str| Storage::of_file(Path::new(name));
        assert_eq!(of("bag_0.mcap.zstd"), Some(Storage::Mcap));
        assert_eq!(of("bag_0.db3.zstd"), Some(Storage::Sqlite3));
        assert_eq!(of("bag_0.zstd"), None);
        assert_eq!(of("notes.txt.zstd"), None);
    }
}
