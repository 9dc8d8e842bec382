//! One file's load: read (unless its length and time are unchanged), checked against the trust
//! policy, compiled and asked for its manifest; what came of it is a [`Candidate`].

use std::path::Path;
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::super::signature::{self, PublicKey};
use super::{Compiled, Connectors, MAX_FILE_BYTES, prepare};
use crate::connectors::runtime::Runtime;
use std::sync::Arc;

/// The outcome of loading one component's bytes.
#[derive(Clone)]
pub(super) struct Candidate {
    pub(super) source: String,
    pub(super) sha256: String,
    pub(super) loaded_at: DateTime<Utc>,
    /// File length and modification time, to skip re-reading unchanged files.
    pub(super) stamp: Option<(u64, SystemTime)>,
    /// Order in which paths first appeared: on a name clash the earlier one keeps the name, also
    /// after it is replaced by a new version.
    pub(super) first_seen: u64,
    pub(super) result: Result<Arc<Compiled>, String>,
    /// Why the file now at `source` was not loaded, when this candidate keeps serving the last
    /// good version from there (a bad deploy over a working connector).
    pub(super) rejected: Option<String>,
    /// Who signed the file, when it carries a valid signature.
    pub(super) signer: Option<PublicKey>,
}

impl Candidate {
    /// A file that did not load, and why.
    pub(super) fn failed(
        source: String,
        sha256: String,
        stamp: Option<(u64, SystemTime)>,
        problem: String,
    ) -> Self {
        Self {
            source,
            sha256,
            loaded_at: Utc::now(),
            stamp,
            first_seen: 0,
            result: Err(problem),
            rejected: None,
            signer: None,
        }
    }
}

impl Connectors {
    /// Loads the file at `path`, reusing `previous` when the file has not changed.
    pub(super) async fn load_file(&self, path: &Path, previous: Option<&Candidate>) -> Candidate {
        let source = path.display().to_string();
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        if let Some(previous) = previous
            && stamp.is_some()
            && previous.stamp == stamp
        {
            return previous.clone();
        }
        let bytes = match stamp {
            Some((len, _)) if len > MAX_FILE_BYTES => Err(format!(
                "the file is {len} bytes; the limit is {MAX_FILE_BYTES}"
            )),
            _ => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read the file: {e}")),
        };
        match bytes {
            Ok(bytes) => {
                let sha = hex::encode(Sha256::digest(&bytes));
                match previous {
                    // Touched but not changed: keep the compiled component.
                    Some(previous) if previous.sha256 == sha => Candidate {
                        stamp,
                        rejected: None,
                        ..previous.clone()
                    },
                    // The trust policy is checked before any of the file is compiled or run.
                    _ => match signature::admit(&bytes, &self.trusted) {
                        Ok(signer) => Candidate {
                            signer,
                            ..load(&self.runtime, source, bytes, sha, stamp).await
                        },
                        Err(problem) => Candidate::failed(source, sha, stamp, problem),
                    },
                }
            }
            Err(problem) => Candidate::failed(source, String::new(), stamp, problem),
        }
    }
}

/// Compiles a component (whose SHA-256 the caller has already taken) and reads its manifest.
pub(super) async fn load(
    runtime: &Runtime,
    source: String,
    bytes: Vec<u8>,
    sha256: String,
    stamp: Option<(u64, SystemTime)>,
) -> Candidate {
    let started = Instant::now();
    let result = prepare(runtime, &source, bytes).await.map(Arc::new);
    if result.is_ok() {
        tracing::debug!(%source, elapsed_ms = started.elapsed().as_millis() as u64, "connector compiled");
    }
    Candidate {
        source,
        sha256,
        loaded_at: Utc::now(),
        stamp,
        first_seen: 0,
        result,
        rejected: None,
        signer: None,
    }
}
