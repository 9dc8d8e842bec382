//! The `integrations-hub` binary as an operator runs it: bad configuration, `migrate`, and a
//! clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_integrations-hub");

fn hub(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn bad_configuration_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (var, value, expected) in [
        (
            "IH_DELIVERY_TIMEOUT_SECONDS",
            "-5",
            "IH_DELIVERY_TIMEOUT_SECONDS",
        ),
        ("IH_DATABASE_URL", "mysql://db/hub", "IH_DATABASE_URL"),
        ("IH_BIND", "0.0.0.0:8000", "IH_API_KEYS"),
    ] {
        let out = hub(dir.path()).env(var, value).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{var}={value}: {stderr}");
    }
    let out = hub(dir.path()).arg("frobnicate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

#[test]
fn migrate_creates_the_default_sqlite_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = hub(dir.path()).arg("migrate").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path().join("data/integrations-hub.db").is_file(),
        "file and folder are created"
    );
    // Applying again is a no-op.
    let again = hub(dir.path()).arg("migrate").output().expect("run");
    assert!(again.status.success());
}

/// `--help` and `--version` answer on stdout; `serve` and `migrate` take a flag for every
/// setting, which wins over its variable.
#[test]
fn help_is_on_stdout_and_flags_mirror_the_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["connector", "test", "--help"],
    ] {
        let out = hub(dir.path()).args(args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let out = hub(dir.path()).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let help = hub(dir.path())
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--database-url",
        "--bind",
        "--delivery-max-attempts",
        "--encryption-key-file",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(help.contains("[env: IH_DELIVERY_MAX_ATTEMPTS]"), "{help}");

    // The flag wins over the variable.
    let out = hub(dir.path())
        .env("IH_DATABASE_URL", "sqlite://from-env.db")
        .args(["migrate", "--database-url", "sqlite://from-flag.db"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("from-flag.db").is_file());
    assert!(!dir.path().join("from-env.db").exists());
    let out = hub(dir.path())
        .args(["serve", "--delivery-max-attempts", "0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IH_DELIVERY_MAX_ATTEMPTS"));
}

#[test]
fn health_fails_when_nothing_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = hub(dir.path())
        .env("IH_BIND", format!("0.0.0.0:{port}"))
        .arg("health")
        .output()
        .expect("health");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no answer from http://127.0.0.1:{port}/readyz")),
        "a wildcard bind is asked on loopback: {stderr}"
    );
}

#[test]
fn serves_then_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = hub(dir.path())
        .env("IH_BIND", "127.0.0.1:0")
        .env("IH_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "no listening line");
        let line = lines.next().expect("hub exited early").expect("read");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["message"] == "integrations hub listening" {
            break entry["addr"].as_str().expect("addr field").to_owned();
        }
    };
    let mut stream = std::net::TcpStream::connect(&addr).expect("hub accepts connections");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // The probe a HEALTHCHECK runs: ready (the database answers), and alive.
    let url = format!("http://{addr}");
    for args in [
        vec!["health", "--url", &url],
        vec!["health", "--url", &url, "--live"],
    ] {
        let out = hub(dir.path()).args(&args).output().expect("health");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\":\"ok\""));
    }

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "SIGTERM is a clean shutdown");
}

/// `connector keygen`, `sign` and `verify` as an operator chains them; an `openssl`-made key
/// signs too.
#[test]
fn components_are_signed_and_verified_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let built = std::path::Path::new(integrations_hub::connectors::BUILT_WASM_DIR);
    assert!(
        !built.as_os_str().is_empty(),
        "the connectors were not built"
    );
    std::fs::copy(
        built.join("example_connector.wasm"),
        dir.path().join("example.wasm"),
    )
    .expect("copy the example");
    let run = |args: &[&str]| hub(dir.path()).args(args).output().expect("run");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let out = run(&["connector", "keygen", "--out", "signing.pem"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("the public key is printed")
        .to_owned();
    assert!(stdout.contains(&format!("IH_COMPONENTS_TRUSTED_KEYS={public}")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("signing.pem"))
            .expect("key")
            .permissions();
        assert_eq!(
            mode.mode() & 0o777,
            0o600,
            "the private key is its owner's alone"
        );
    }
    // Never over an existing key.
    let again = run(&["connector", "keygen", "--out", "signing.pem"]);
    assert_eq!(again.status.code(), Some(2));

    let unsigned = run(&["connector", "verify", "example.wasm"]);
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(text(&unsigned.stderr).contains("not signed"));

    let out = run(&["connector", "sign", "example.wasm", "--key", "signing.pem"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["connector", "verify", "example.wasm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("(public key {public})")),
        "{}",
        text(&out.stdout)
    );

    let mut bytes = std::fs::read(dir.path().join("example.wasm")).expect("signed");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(dir.path().join("tampered.wasm"), bytes).expect("write");
    let out = run(&["connector", "verify", "tampered.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("changed after key"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(dir.path().join("not.wasm"), b"hello").expect("write");
    let out = run(&["connector", "sign", "not.wasm", "--key", "signing.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a WebAssembly component"));

    // A key made by OpenSSL (PKCS#8 v1) signs as well, into another file.
    let openssl = Command::new("openssl")
        .current_dir(dir.path())
        .args(["genpkey", "-algorithm", "ed25519", "-out", "openssl.pem"])
        .output();
    match openssl {
        Ok(o) if o.status.success() => {
            let out = run(&[
                "connector",
                "sign",
                "example.wasm",
                "--key",
                "openssl.pem",
                "--out",
                "resigned.wasm",
            ]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let out = run(&["connector", "verify", "resigned.wasm"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(
                !text(&out.stdout).contains(&public),
                "the new key signed it"
            );
        }
        _ => eprintln!("openssl is not installed: the OpenSSL key case is not run"),
    }
}
