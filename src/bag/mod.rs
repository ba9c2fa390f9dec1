//! rosbag2 files without ROS: CDR for the message types involved, `ros2msg` schemas, a
//! streaming reader (MCAP and SQLite3), an MCAP writer with metadata.yaml, and labelled
//! bags (camera frames with ground-truth topics) for evaluation.

pub mod cdr;
pub mod labelled;
pub mod qos;
pub mod read;
pub mod schema;
pub mod write;

pub use read::{
    BagError, BagInfo, BagMessage, BagReader, MetadataRecord, Recorded, Storage, TopicInfo,
};
pub use write::{storage_file_number, BagWriter, WriteSummary, DEFAULT_MAX_FILE_BYTES};
