//! How a long operation tells its caller what it is doing. The CLI shows it as a spinner and
//! printed lines; tests and library users can ignore it.

pub trait Progress: Send + Sync {
    /// A step now under way (shown transiently, e.g. as a spinner message).
    fn step(&self, msg: &str);
    /// Something worth keeping on screen: an action taken or a decision made.
    fn note(&self, msg: &str);
    /// A figure of the operation for `--json` (a timeline, a timing in ms, the WAL a rewind
    /// discarded); the lines of the outcome say the same to a person. Unknown is `null`,
    /// never 0.
    fn figure(&self, _key: &str, _value: serde_json::Value) {}
}

/// `progress.figure(key, value)` for anything that serializes.
pub fn figure(progress: &dyn Progress, key: &str, value: impl serde::Serialize) {
    progress.figure(
        key,
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
    );
}

/// Discards everything; for tests and quiet callers.
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _msg: &str) {}
    fn note(&self, _msg: &str) {}
}
