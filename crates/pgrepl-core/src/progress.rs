//! How a long operation tells its caller what it is doing. The CLI shows it as a spinner and
//! printed lines; tests and library users can ignore it.

pub trait Progress: Send + Sync {
    /// A step now under way (shown transiently, e.g. as a spinner message).
    fn step(&self, msg: &str);
    /// Something worth keeping on screen: an action taken or a decision made.
    fn note(&self, msg: &str);
}

/// Discards everything; for tests and quiet callers.
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _msg: &str) {}
    fn note(&self, _msg: &str) {}
}
