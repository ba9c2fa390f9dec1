//! Training: the paper's losses (the trainer, data loaders and synthetic scenes build on
//! them).

pub mod loss;
