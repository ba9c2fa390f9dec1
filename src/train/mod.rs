//! Training: the paper's losses, dataset layouts and batches, accuracy metrics and the
//! training loop.

pub mod data;
pub mod examples;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod trainer;
