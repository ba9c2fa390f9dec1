//! Writing rosbag2 bags in MCAP storage: one `<name>_0.mcap` file plus the metadata.yaml
//! that `ros2 bag` and rosbags read. Channels carry message encoding `cdr` and schema
//! encoding `ros2msg` with full definitions, as rosbag2 writes them.
//!
//! Like mcap's writer: create, write, then an explicit [`BagWriter::finish`]; a writer
//! dropped without `finish` finishes the MCAP file but writes no metadata.yaml, and a
//! process killed while writing leaves an MCAP file without its summary (whole up to the
//! last [`BagWriter::flush`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::read::BagError;
use super::schema;

/// What a finished bag holds.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    pub dir: PathBuf,
    pub message_count: u64,
    /// Messages per topic, with the topic's type.
    pub topics: BTreeMap<String, (String, u64)>,
    pub size_bytes: u64,
}

/// A bag directory being written.
pub struct BagWriter {
    dir: PathBuf,
    file_name: String,
    mcap: mcap::Writer<BufWriter<File>>,
    schemas: HashMap<String, u16>,
    /// Topic -> (channel id, type).
    channels: HashMap<String, (u16, String)>,
    topics: BTreeMap<String, (String, u64)>,
    sequence: u32,
    first_ns: Option<u64>,
    last_ns: u64,
    /// Message bytes in the current chunk, and whether it is held open until `flush`.
    unflushed: usize,
    holding: bool,
}

/// Message bytes after which a chunk ends (unless held): mcap's own default size.
const CHUNK_BYTES: usize = 1 << 20;

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

    /// Like [`BagWriter::create`], with the storage file named `<stem>_0.mcap`: for a bag
    /// written under a temporary directory name and renamed when complete.
    pub fn create_named(dir: &Path, stem: &str) -> Result<Self, BagError> {
        let io = |source| BagError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir(dir).map_err(io)?;
        let file_name = format!("{stem}_0.mcap");
        let file = File::create(dir.join(&file_name)).map_err(io)?;
        let mcap = mcap::WriteOptions::new()
            .profile("ros2")
            .library(format!("bayes_perception {}", env!("CARGO_PKG_VERSION")))
            .compression(Some(mcap::Compression::Zstd))
            // Chunks end where this writer says (CHUNK_BYTES, or flush), never inside a
            // group of messages held together (hold_chunk).
            .chunk_size(None)
            .create(BufWriter::new(file))
            .map_err(|e| BagError::Invalid {
                path: dir.to_owned(),
                message: e.to_string(),
            })?;
        Ok(BagWriter {
            dir: dir.to_owned(),
            file_name,
            mcap,
            schemas: HashMap::new(),
            channels: HashMap::new(),
            topics: BTreeMap::new(),
            sequence: 0,
            first_ns: None,
            last_ns: 0,
            unflushed: 0,
            holding: false,
        })
    }

    /// The MCAP error with its causes (the OS error of a full disk, say), which the
    /// mcap crate's own message leaves out. An OS error stays one (`BagError::Io`), so
    /// callers can tell a full disk from a malformed write.
    fn mcap_error(&self, e: mcap::McapError) -> BagError {
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
        let path = self.dir.join(&self.file_name);
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

    fn channel(&mut self, topic: &str, type_name: &str) -> Result<u16, BagError> {
        if let Some((id, written_type)) = self.channels.get(topic) {
            // One type per topic, as rosbag2 records them (metadata.yaml lists one).
            if written_type != type_name {
                return Err(BagError::Invalid {
                    path: self.dir.clone(),
                    message: format!(
                        "topic {topic} is written as {written_type}, not also as {type_name}"
                    ),
                });
            }
            return Ok(*id);
        }
        let schema_id = match self.schemas.get(type_name) {
            Some(&id) => id,
            None => {
                let definition =
                    schema::definition(type_name).ok_or_else(|| BagError::Invalid {
                        path: self.dir.clone(),
                        message: format!("no message definition for type {type_name}"),
                    })?;
                let id = self
                    .mcap
                    .add_schema(type_name, "ros2msg", definition.as_bytes())
                    .map_err(|e| self.mcap_error(e))?;
                self.schemas.insert(type_name.to_owned(), id);
                id
            }
        };
        let metadata = BTreeMap::from([("offered_qos_profiles".to_owned(), String::new())]);
        let id = self
            .mcap
            .add_channel(schema_id, topic, "cdr", &metadata)
            .map_err(|e| self.mcap_error(e))?;
        self.channels
            .insert(topic.to_owned(), (id, type_name.to_owned()));
        Ok(id)
    }

    /// Writes one CDR message logged at `log_time` (ns since the epoch).
    pub fn write(
        &mut self,
        topic: &str,
        type_name: &str,
        log_time: u64,
        cdr: &[u8],
    ) -> Result<(), BagError> {
        let channel_id = self.channel(topic, type_name)?;
        self.sequence = self.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id,
            sequence: self.sequence,
            log_time,
            publish_time: log_time,
        };
        self.mcap
            .write_to_known_channel(&header, cdr)
            .map_err(|e| self.mcap_error(e))?;
        let entry = self
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| (type_name.to_owned(), 0));
        entry.1 += 1;
        self.first_ns = Some(self.first_ns.map_or(log_time, |f| f.min(log_time)));
        self.last_ns = self.last_ns.max(log_time);
        self.unflushed += cdr.len();
        if !self.holding && self.unflushed >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The messages written from now until [`BagWriter::flush`] go into one chunk, however
    /// large (a frame's input and outputs): a process killed meanwhile leaves all of them
    /// in the file or none.
    pub fn hold_chunk(&mut self) {
        self.holding = true;
    }

    /// Ends the current chunk and hands everything written so far to the operating system:
    /// a kill of this process (not a power loss) leaves it readable in the file, which
    /// then lacks only its summary ([`BagReader`](super::BagReader) reads such a file up
    /// to its end).
    pub fn flush(&mut self) -> Result<(), BagError> {
        self.holding = false;
        self.unflushed = 0;
        self.mcap.flush().map_err(|e| self.mcap_error(e))
    }

    /// Closes the MCAP file (summary and index) and writes metadata.yaml, both synced to
    /// the disk with their directory: a bag renamed into place afterwards is whole even
    /// after a power loss.
    pub fn finish(mut self) -> Result<WriteSummary, BagError> {
        self.mcap.finish().map_err(|e| self.mcap_error(e))?;
        let mcap_path = self.dir.join(&self.file_name);
        sync(&mcap_path)?;
        let start = self.first_ns.unwrap_or(0);
        let duration = self.last_ns.saturating_sub(start);
        let message_count: u64 = self.topics.values().map(|(_, n)| n).sum();
        let metadata = MetadataFile {
            rosbag2_bagfile_information: Metadata {
                version: 5,
                storage_identifier: "mcap",
                duration: Nanoseconds {
                    nanoseconds: duration,
                },
                starting_time: NanosecondsSinceEpoch {
                    nanoseconds_since_epoch: start,
                },
                message_count,
                topics_with_message_count: self
                    .topics
                    .iter()
                    .map(|(name, (type_name, count))| TopicWithCount {
                        topic_metadata: TopicMetadata {
                            name: name.clone(),
                            type_name: type_name.clone(),
                            serialization_format: "cdr",
                            offered_qos_profiles: "",
                        },
                        message_count: *count,
                    })
                    .collect(),
                compression_format: "",
                compression_mode: "",
                relative_file_paths: vec![self.file_name.clone()],
                files: vec![FileInfo {
                    path: self.file_name.clone(),
                    starting_time: NanosecondsSinceEpoch {
                        nanoseconds_since_epoch: start,
                    },
                    duration: Nanoseconds {
                        nanoseconds: duration,
                    },
                    message_count,
                }],
            },
        };
        let yaml = serde_yaml::to_string(&metadata).expect("metadata serialises");
        let meta_path = self.dir.join("metadata.yaml");
        std::fs::write(&meta_path, yaml).map_err(|source| BagError::Io {
            path: meta_path.clone(),
            source,
        })?;
        sync(&meta_path)?;
        sync(&self.dir)?;
        let size_bytes = std::fs::metadata(self.dir.join(&self.file_name)).map_or(0, |m| m.len());
        Ok(WriteSummary {
            dir: self.dir.clone(),
            message_count,
            topics: self.topics.clone(),
            size_bytes,
        })
    }
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
    offered_qos_profiles: &'static str,
}

#[derive(Serialize)]
struct FileInfo {
    path: String,
    starting_time: NanosecondsSinceEpoch,
    duration: Nanoseconds,
    message_count: u64,
}

/// fsync of a file or directory ([`crate::output::sync_path`]).
fn sync(path: &Path) -> Result<(), BagError> {
    crate::output::sync_path(path).map_err(|source| BagError::Io {
        path: path.to_owned(),
        source,
    })
}
