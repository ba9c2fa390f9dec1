//! Everything the ROS 2 node does that does not need ROS: the keep-latest frame slot,
//! diagnostics aggregation and parameter handling. The r2r layer
//! (`src/bin/bayes_perception_node.rs`, feature `ros`) only wires these to topics.

pub mod diagnostics;
pub mod params;
pub mod slot;
pub mod throttle;
