//! Readers of the variables that take more than a number: log filters, networks, binds, API
//! and encryption keys. Each refuses a bad value with a [`ConfigError`] naming its variable.

use std::net::SocketAddr;

use super::settings::{self, Vars};
use super::{ApiKey, ConfigError, EncryptionKey, Scope, Secret, err};

/// The levels a filter may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `IH_LOG_LEVEL`: a level, or a tracing filter whose every directive names a level. A bare word
/// that is not a level would be read as a target (`verbose` = "everything of target verbose"),
/// leaving the hub silent: it is refused instead.
pub(super) fn check_log_level(filter: &str) -> Result<(), ConfigError> {
    let setting = &settings::LOG_LEVEL;
    let refuse = |why: String| {
        err(
            setting,
            format!(
                "expected trace, debug, info, warn, error or off (or a filter such as info,integrations_hub=debug): {why}"
            ),
        )
    };
    for directive in filter.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level) {
            return Err(refuse(format!("{directive:?} names no level")));
        }
    }
    filter
        .parse::<tracing_subscriber::EnvFilter>()
        .map(drop)
        .map_err(|e| refuse(format!("{filter:?}: {e}")))
}

/// `IH_ALLOWED_DESTINATION_CIDRS`: networks such as `10.20.0.0/16`; a bare address is one host.
pub(super) fn cidrs(vars: &Vars) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let setting = &settings::ALLOWED_DESTINATION_CIDRS;
    vars.text(setting)
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    err(
                        setting,
                        format!("{c:?} is not a network such as 10.20.0.0/16 or fd00:1::/32"),
                    )
                })
        })
        .collect()
}

/// An address with a port; `localhost` stands for the IPv4 loopback.
pub(super) fn parse_bind(text: &str) -> Option<SocketAddr> {
    match text.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
            Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)))
        }
        _ => text.parse().ok(),
    }
}

/// A bearer token: long enough to guess never, and printable.
pub(super) fn check_token(setting: &settings::Setting, key: &Secret) -> Result<(), ConfigError> {
    if key.expose().len() < 16 {
        return Err(err(
            setting,
            "every key must be at least 16 characters long (generate one with `openssl rand -hex 32`)",
        ));
    }
    if key
        .expose()
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(
            setting,
            "keys may not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// `IH_API_KEYS`: comma-separated, each long enough and printable, `admin` unless prefixed with
/// another scope; required beyond loopback.
pub(super) fn api_keys(vars: &Vars, bind: SocketAddr) -> Result<Vec<ApiKey>, ConfigError> {
    let setting = &settings::API_KEYS;
    let keys: Vec<ApiKey> = vars
        .text(setting)
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let scoped = Scope::ALL.iter().find_map(|scope| {
                let rest = k.strip_prefix(scope.as_str())?.strip_prefix(':')?;
                Some((*scope, rest))
            });
            let (scope, key) = scoped.unwrap_or((Scope::Admin, k));
            ApiKey {
                scope,
                key: Secret::new(key),
            }
        })
        .collect();
    for key in &keys {
        check_token(setting, &key.key)?;
    }
    if keys.is_empty() && !bind.ip().is_loopback() {
        return Err(err(
            setting,
            format!(
                "is empty but IH_BIND={bind} is reachable from other machines, so anyone could publish events \
                 and read subscriptions; set IH_API_KEYS=<key>[,<key>...] or bind to 127.0.0.1"
            ),
        ));
    }
    Ok(keys)
}

/// `IH_ENCRYPTION_KEY` or the file `IH_ENCRYPTION_KEY_FILE` names: keys separated by commas or
/// line breaks; required beyond loopback, as API keys are.
pub(super) fn encryption_keys(
    vars: &Vars,
    bind: SocketAddr,
) -> Result<Vec<EncryptionKey>, ConfigError> {
    let (inline, file) = (&settings::ENCRYPTION_KEY, &settings::ENCRYPTION_KEY_FILE);
    let (setting, text) = match (vars.raw(inline), vars.raw(file)) {
        (Some(_), Some(_)) => {
            return Err(err(
                file,
                "set either IH_ENCRYPTION_KEY or IH_ENCRYPTION_KEY_FILE, not both",
            ));
        }
        (Some(keys), None) => (inline, keys.to_owned()),
        (None, Some(path)) => (
            file,
            std::fs::read_to_string(path)
                .map_err(|e| err(file, format!("cannot read {path:?}: {e}")))?,
        ),
        (None, None) => (inline, String::new()),
    };
    let keys = text
        .split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(i, k)| {
            EncryptionKey::parse(k).ok_or_else(|| {
                err(
                    setting,
                    format!(
                        "key {} is not 32 bytes written as base64 or hex (generate one with `openssl rand -base64 32`)",
                        i + 1
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() && !bind.ip().is_loopback() {
        return Err(err(
            setting,
            format!(
                "is empty but IH_BIND={bind} is reachable from other machines, so subscription secrets would be \
                 stored unencrypted; set IH_ENCRYPTION_KEY=$(openssl rand -base64 32) (keep it safe: secrets cannot \
                 be read without it) or bind to 127.0.0.1"
            ),
        ));
    }
    Ok(keys)
}

/// `IH_COMPONENTS_TRUSTED_KEYS`: ed25519 public keys, base64 of their 32 bytes.
pub(super) fn trusted_keys(vars: &Vars) -> Result<Vec<[u8; 32]>, ConfigError> {
    use base64::Engine as _;
    let setting = &settings::COMPONENTS_TRUSTED_KEYS;
    (vars.text(setting).split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(k);
            bytes.ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                err(
                    setting,
                    format!(
                        "{k:?} is not an ed25519 public key (the base64 of 32 bytes that \
                         `integrations-hub connector keygen` prints)"
                    ),
                )
            })
        })
        .collect()
}
