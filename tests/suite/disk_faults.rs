//! SQLite on a disk that fills up or is read-only: writes are refused with a clear 503 (never a
//! 202 for an event that was not stored), the hub carries on by itself once there is room, and
//! the database file is never corrupted.
//!
//! The disk is a real one: a small tmpfs mounted for the test, so the hub sees the kernel's own
//! ENOSPC and EROFS. Mounting needs root; elsewhere the tests are skipped with a notice, and
//! under `CI=true` that skip is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integrations_hub_testkit::receiver::{Receiver, Reply};
use integrations_hub_testkit::{Api, HubProcess, TestDb, send};
use serde_json::{Value, json};
use sqlx::Connection;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Disk {
    path: PathBuf,
}

impl Disk {
    /// Mounts a tmpfs of `size` (e.g. "2m") at `path`; `None` (skip) when mounting is not
    /// allowed here, except under CI.
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self {
                path: path.to_owned(),
            }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                integrations_hub_testkit::skip_unless_ci(
                    "disk-fault test",
                    "a tmpfs it may mount",
                    &format!("{why}; run as root"),
                );
                None
            }
        }
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount,{options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ("IH_DELIVERY_TIMEOUT_SECONDS", "2"),
    ]
}

/// Publishes a batch of `n` events with 2 KiB payloads: `Ok(ids)` on 202, `Err(problem)` on 503.
/// Any other answer fails the test.
async fn publish(hub: &Api, n: usize) -> Result<Vec<String>, Value> {
    let pad = "x".repeat(2048);
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"event_type": "disk.test", "payload": {"i": i, "pad": pad}}))
        .collect();
    let response = hub
        .post("/api/v1/events/batch")
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the hub did not answer: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = response.json().await.expect("a JSON body");
    match status {
        202 => Ok(body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()),
        503 => {
            assert_eq!(content_type, "application/problem+json", "{body}");
            assert!(
                body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("nothing was stored")),
                "the 503 says nothing was stored: {body}"
            );
            Err(body)
        }
        other => panic!("a publish on a failing disk got {other}, not 202 or 503: {body}"),
    }
}

/// Waits until every delivery is finished and returns the event ids the receiver got.
async fn settle(
    db: &TestDb,
    receiver: &Receiver,
    hub: &HubProcess,
) -> std::collections::HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.unfinished_deliveries().await > 0 {
        if Instant::now() > deadline {
            let log: Vec<String> = hub
                .log()
                .into_iter()
                .filter(|line| !line.contains("\"level\":\"INFO\""))
                .collect();
            let tail = &log[log.len().saturating_sub(40)..];
            let mut conn = sqlx::SqliteConnection::connect(&db.url)
                .await
                .expect("open");
            let rows: Vec<(String, i64, i64, i64, Option<String>)> = sqlx::query_as(
                "SELECT status, COUNT(*), MIN(next_attempt_at), MAX(attempts), MAX(last_error) \
                 FROM deliveries GROUP BY status",
            )
            .fetch_all(&mut conn)
            .await
            .expect("deliveries by status");
            panic!(
                "deliveries unfinished after 60 s: {rows:?}; the hub's last warnings:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

async fn integrity(db: &TestDb) -> (String, i64) {
    let mut conn = sqlx::SqliteConnection::connect(&db.url)
        .await
        .expect("open the database file");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check");
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count events");
    (check, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_with_503_and_the_hub_recovers_when_there_is_room() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(disk) = Disk::mount(&dir.path().join("disk"), "2m") else {
        return;
    };
    let db = TestDb::sqlite_file(&disk.path.join("hub.db"));
    let receiver = Receiver::start(Reply::Status(200)).await;
    let hub = HubProcess::start(&db, &vars()).await;
    hub.subscribe(&receiver.url("/disk"), json!(["*"])).await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match publish(&hub, 25).await {
            Ok(ids) => accepted.extend(ids),
            Err(_) => {
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
    }
    assert!(refused > 0, "the 2 MiB disk never filled");
    assert!(
        !accepted.is_empty(),
        "some publishes fitted before it filled"
    );
    // Either answer is right here (the database may or may not answer within the probe).
    let (status, _) = send(hub.get("/health")).await;
    assert!(status == 200 || status == 503, "health answers: {status}");

    // Room again: the same process takes publishes and delivers everything it accepted.
    disk.remount("size=64m");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match publish(&hub, 25).await {
            Ok(ids) => {
                accepted.extend(ids);
                break;
            }
            Err(problem) => {
                assert!(
                    Instant::now() < deadline,
                    "still refused 20 s after the disk had room: {problem}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let delivered = settle(&db, &receiver, &hub).await;
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !delivered.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} accepted events never delivered",
        lost.len()
    );
    let accepted_set: std::collections::HashSet<&String> = accepted.iter().collect();
    let phantom = delivered
        .iter()
        .filter(|id| !accepted_set.contains(id))
        .count();
    assert_eq!(phantom, 0, "webhooks sent for events that were refused");
    hub.kill9();

    let (check, events) = integrity(&db).await;
    assert_eq!(check, "ok", "PRAGMA integrity_check after a full disk");
    assert_eq!(
        events,
        accepted.len() as i64,
        "exactly the accepted events are stored: none of the refused ones"
    );
    eprintln!(
        "full disk: {} events accepted and delivered, {refused} batches refused with 503, integrity ok",
        accepted.len()
    );
}

fn digest(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(path)
        .expect("list the disk")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read file"))
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_disk_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(disk) = Disk::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let db = TestDb::sqlite_file(&disk.path.join("hub.db"));
    let hub = HubProcess::start(&db, &vars()).await;
    let ids = publish(&hub, 10).await.expect("published");
    // Killed, not stopped: the write-ahead log is left behind, as after a crash.
    hub.kill9();

    let before = digest(&disk.path);
    disk.remount("ro");
    match HubProcess::try_start(&db, &[]).await {
        Err(log) => {
            let lower = log.to_lowercase();
            assert!(
                lower.contains("read-only") || lower.contains("readonly"),
                "the start-up error says the disk is read-only:\n{log}"
            );
            assert!(!log.contains("panicked"), "{log}");
            eprintln!("read-only disk: the hub refused to start:\n{log}");
        }
        Ok(hub) => {
            // Serving reads is fine; every write must be a clean 503.
            let answered = tokio::time::timeout(Duration::from_secs(30), publish(&hub, 1)).await;
            match answered {
                Ok(Err(problem)) => {
                    eprintln!("read-only disk: the hub serves and refuses writes: {problem}")
                }
                other => panic!(
                    "a publish on a read-only disk: {other:?}\nlog:\n{}",
                    hub.log().join("\n")
                ),
            }
            hub.kill9();
        }
    }
    assert_eq!(
        digest(&disk.path),
        before,
        "nothing on the read-only disk changed"
    );

    disk.remount("rw");
    let hub = HubProcess::start(&db, &vars()).await;
    for id in &ids {
        hub.event(id).await;
    }
    hub.kill9();
    let (check, events) = integrity(&db).await;
    assert_eq!((check.as_str(), events), ("ok", 10));
}
