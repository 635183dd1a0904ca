//! earthmover
