//! The DCC scaler: an AWS Lambda that sizes the worker autoscaling groups from queue depth and
//! worker health in Redis. Not built yet (see the tracker's scaler issue); the crate exists so
//! the workspace has its final shape.
