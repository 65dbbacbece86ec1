//! The terminal face of `pgrepl_core::progress::Progress`: a spinner for what is under way,
//! printed lines for what was done.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pgrepl_core::progress::Progress;

pub struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    pub fn new() -> Self {
        // indicatif draws nothing when stderr is not a terminal (CI, pipes).
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner { bar }
    }
}

impl Progress for Spinner {
    fn step(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }
    fn note(&self, msg: &str) {
        self.bar.suspend(|| println!("{msg}"));
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// For `--json`: nothing on the terminal; the notes and figures are kept for the report.
#[derive(Default)]
pub struct Collect {
    pub notes: Mutex<Vec<String>>,
    pub figures: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl Progress for Collect {
    fn step(&self, _msg: &str) {}
    fn note(&self, msg: &str) {
        self.notes
            .lock()
            .expect("not poisoned")
            .push(msg.to_string());
    }
    fn figure(&self, key: &str, value: serde_json::Value) {
        self.figures
            .lock()
            .expect("not poisoned")
            .insert(key.to_string(), value);
    }
}
