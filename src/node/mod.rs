//! Everything the ROS 2 node does that does not need ROS: parameters and their services,
//! the keep-latest frame slot, the inference thread, diagnostics and log throttling. The
//! r2r layer (`src/bin/bayes_perception_node/`, feature `ros`) only converts messages and
//! wires these to topics, services and threads.

pub mod diagnostics;
pub mod params;
pub mod slot;
pub mod throttle;
pub mod worker;
