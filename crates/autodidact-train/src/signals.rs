//! Graceful stop on SIGINT / SIGTERM.
//!
//! While a [`StopOnSignal`] is alive, the first SIGINT or SIGTERM only raises a flag: the
//! trainer finishes the step it is in, writes a checkpoint and returns
//! [`crate::TrainError::Interrupted`]. A second signal exits at once with status
//! [`EXIT_SECOND_SIGNAL`] (nothing is torn: checkpoints are written atomically). Dropping the
//! guard restores the previous handlers, so the rest of the program keeps the default
//! behaviour of Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Exit status when a second signal arrives before the checkpoint is written (128 + SIGINT,
/// what a shell reports for a process ended by Ctrl-C).
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// Handlers for SIGINT and SIGTERM that request a graceful stop; removed on drop.
#[derive(Debug)]
pub struct StopOnSignal {
    flag: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl StopOnSignal {
    /// Installs the handlers.
    ///
    /// # Errors
    /// The operating system refused to install a handler.
    pub fn install() -> std::io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut guard = Self { flag, ids: Vec::new() };
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the shutdown hook sees the flag as it was before this signal, so
            // only a second signal exits.
            guard.ids.push(signal_hook::flag::register_conditional_shutdown(signal, EXIT_SECOND_SIGNAL, Arc::clone(&guard.flag))?);
            guard.ids.push(signal_hook::flag::register(signal, Arc::clone(&guard.flag))?);
        }
        Ok(guard)
    }

    /// True once a signal has asked the run to stop.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for StopOnSignal {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
