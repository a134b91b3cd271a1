//! Secrets Manager's staging labels, as both binaries name them.

/// The version applications use.
pub const CURRENT: &str = "AWSCURRENT";
/// The version a rotation in progress is setting up.
pub const PENDING: &str = "AWSPENDING";
/// The version AWSCURRENT had before the last finished rotation.
pub const PREVIOUS: &str = "AWSPREVIOUS";
