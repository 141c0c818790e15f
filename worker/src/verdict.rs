//! The verdict of an attempt: from how its container ended and what it left behind, the state,
//! exit code and error the job records. Pure: every rule has a row in the table test below.

use dcc_shared::job::spec::Parameters;
use dcc_shared::job::{ErrorCode, JobError, JobState, OutputFile};
use dcc_shared::storage::StorageError;

use crate::files::{OutputError, Outputs};

/// How the container's run ended.
pub(crate) enum Exit {
    Code(i64),
    Timeout,
    Broken(String),
}

/// What the container left behind, gathered after it stopped.
pub(crate) struct Collected {
    pub(crate) oom_killed: bool,
    pub(crate) logs: Result<(), StorageError>,
    pub(crate) outputs: Result<Outputs, OutputError>,
}

impl Collected {
    /// Entries under `/outputs` that were not read.
    pub(crate) fn skipped(&self) -> u32 {
        self.outputs
            .as_ref()
            .map_or(0, |o| u32::try_from(o.skipped).unwrap_or(u32::MAX))
    }
}

/// What the attempt amounts to.
pub(crate) struct Verdict {
    pub(crate) state: JobState,
    pub(crate) exit_code: Option<i64>,
    pub(crate) error: Option<JobError>,
    pub(crate) outputs: Vec<OutputFile>,
}

/// A job error with its code's wire spelling.
pub(crate) fn job_error(code: ErrorCode, message: impl Into<String>) -> JobError {
    JobError {
        code: code.as_str().to_string(),
        message: message.into(),
    }
}

/// The attempt's state, exit code, error and outputs from how the container ended and what it
/// left. Never `succeeded` with missing outputs or logs.
pub(crate) fn judge(exit: Exit, c: Collected, limits: &Parameters) -> Verdict {
    let (state, exit_code, error) = match exit {
        Exit::Code(0) => (JobState::Succeeded, Some(0), None),
        Exit::Code(code) if c.oom_killed => (
            JobState::Failed,
            Some(code),
            Some(job_error(
                ErrorCode::NonzeroExit,
                format!(
                    "the container ran out of memory (memoryMb {}) and was killed (exit code {code})",
                    limits.memory_mb
                ),
            )),
        ),
        Exit::Code(code) => (
            JobState::Failed,
            Some(code),
            Some(job_error(
                ErrorCode::NonzeroExit,
                format!("the command exited with code {code}"),
            )),
        ),
        Exit::Timeout => (
            JobState::TimedOut,
            None,
            Some(job_error(
                ErrorCode::TimedOut,
                format!(
                    "ran past maxDurationSecs ({} s); the container was killed",
                    limits.max_duration_secs
                ),
            )),
        ),
        Exit::Broken(msg) => (
            JobState::Failed,
            None,
            Some(job_error(
                ErrorCode::ContainerFailed,
                format!("lost track of the container: {msg}"),
            )),
        ),
    };
    let (state, error, outputs) = match (c.outputs, c.logs) {
        (Ok(outputs), Ok(())) => (state, error, outputs.files),
        (Err(e), _) => (
            JobState::Failed,
            Some(job_error(ErrorCode::OutputUploadFailed, e.0)),
            Vec::new(),
        ),
        (Ok(_), Err(e)) => (
            JobState::Failed,
            Some(job_error(
                ErrorCode::OutputUploadFailed,
                format!("the logs could not be stored: {e}"),
            )),
            Vec::new(),
        ),
    };
    Verdict {
        state,
        exit_code,
        error,
        outputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Parameters {
        Parameters {
            cpus: 1.0,
            memory_mb: 512,
            gpus: 0,
            max_duration_secs: 60,
            max_attempts: 3,
            network: false,
        }
    }

    fn collected(oom_killed: bool, logs_ok: bool, outputs_ok: bool) -> Collected {
        let file = OutputFile {
            name: "out.txt".into(),
            size: 3,
        };
        Collected {
            oom_killed,
            logs: if logs_ok {
                Ok(())
            } else {
                Err(StorageError::Backend(std::io::Error::other("bucket gone")))
            },
            outputs: if outputs_ok {
                Ok(Outputs {
                    files: vec![file],
                    skipped: 0,
                })
            } else {
                Err(OutputError("disk full".into()))
            },
        }
    }

    /// (how it ended, out of memory, logs stored, outputs stored) → (state, exit code, error
    /// code, words of the message, outputs kept).
    type Row = (
        Exit,
        bool,
        bool,
        bool,
        JobState,
        Option<i64>,
        Option<ErrorCode>,
        &'static str,
        usize,
    );

    /// Every rule, a row each.
    #[test]
    fn each_ending_has_its_verdict() {
        use ErrorCode::{ContainerFailed, NonzeroExit, OutputUploadFailed};
        use JobState::{Failed, Succeeded};
        let broken = || Exit::Broken("the wait stream ended".into());
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            (Exit::Code(0),   false, true,  true,  Succeeded, Some(0),   None,                     "",               1),
            (Exit::Code(3),   false, true,  true,  Failed,    Some(3),   Some(NonzeroExit),        "exited with code 3", 1),
            (Exit::Code(137), true,  true,  true,  Failed,    Some(137), Some(NonzeroExit),        "out of memory (memoryMb 512)", 1),
            // Out of memory is only reported for a non-zero exit.
            (Exit::Code(0),   true,  true,  true,  Succeeded, Some(0),   None,                     "",               1),
            (Exit::Timeout,   false, true,  true,  JobState::TimedOut, None, Some(ErrorCode::TimedOut),           "maxDurationSecs (60 s)", 1),
            (broken(),        false, true,  true,  Failed,    None,      Some(ContainerFailed),    "lost track",     1),
            // Never `succeeded` with missing outputs or logs, whatever the exit.
            (Exit::Code(0),   false, true,  false, Failed,    Some(0),   Some(OutputUploadFailed), "disk full",      0),
            (Exit::Code(0),   false, false, true,  Failed,    Some(0),   Some(OutputUploadFailed), "logs could not be stored", 0),
            (Exit::Code(0),   false, false, false, Failed,    Some(0),   Some(OutputUploadFailed), "disk full",      0),
            (Exit::Code(3),   false, true,  false, Failed,    Some(3),   Some(OutputUploadFailed), "disk full",      0),
            (Exit::Timeout,   false, false, true,  Failed,    None,      Some(OutputUploadFailed), "logs",           0),
        ];
        for (i, (exit, oom, logs, outs, state, code, err, words, kept)) in table.into_iter().enumerate() {
            let v = judge(exit, collected(oom, logs, outs), &limits());
            assert_eq!(v.state, state, "row {i}");
            assert_eq!(v.exit_code, code, "row {i}");
            assert_eq!(
                v.error.as_ref().map(|e| e.code.as_str()),
                err.map(|c| c.as_str()),
                "row {i}"
            );
            let message = v.error.as_ref().map_or("", |e| e.message.as_str());
            assert!(message.contains(words), "row {i}: {message:?} lacks {words:?}");
            assert_eq!(v.outputs.len(), kept, "row {i}");
        }
    }
}
