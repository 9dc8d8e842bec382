//! The console in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! over the flows an operator uses, on both backends, with a screenshot of every page saved to
//! `target/console-screenshots/<backend>/` (the README's Console section shows them).
//!
//! Without Chromium and chromedriver these print a `SKIPPED` line; under `CI=true` their
//! absence fails the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use integrations_hub_testkit::fixtures::fast;
use integrations_hub_testkit::receiver::{
    Receiver, Reply, verify_seed_signature, verify_standard_signature,
};
use integrations_hub_testkit::{Api, Backend, TestHub, backend_tests};
use serde_json::json;

backend_tests!(an_operator_works_through_the_console_in_a_real_browser);

/// The key the console signs in with.
const KEY: &str = "console-key-0123456789abcdef";
/// A `read:` key of the same hub.
const READ_KEY: &str = "console-read-key-0123456789";
/// How long a page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// One browser at a time: two Chromiums on two cores beside the rest of the suite are slow.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Headless Chromium behind its own chromedriver, with a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

fn installed(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

impl Browser {
    /// `None` (with a `SKIPPED` line) when Chromium or chromedriver is missing, except in CI.
    async fn start(backend: Backend) -> Option<Self> {
        let chromium = installed(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let chromedriver = installed(&["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
            integrations_hub_testkit::skip_unless_ci(
                "console browser tests",
                "chromium and chromedriver",
                "apt-get install chromium chromium-driver",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() > PATIENCE => panic!("chromedriver: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/console-screenshots")
            .join(format!("{backend:?}").to_lowercase());
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Some(Self {
            client,
            driver,
            shots,
            _profile: profile,
        })
    }

    /// Signs the console in with `key`, as the login form would (it takes effect on the next
    /// page load).
    async fn use_key(&self, key: &str) {
        self.client
            .execute(
                "sessionStorage.setItem('ih.console.apiKey', arguments[0])",
                vec![json!(key)],
            )
            .await
            .expect("set the key");
    }

    fn css(test: &str) -> String {
        format!("[data-test=\"{test}\"]")
    }

    /// Opens `url` and waits for `page` to finish loading.
    async fn open(&self, url: &str, page: &str) {
        self.client.goto(url).await.expect("navigate");
        self.ready(page).await;
    }

    /// Waits until `page` shows and its first load is done.
    async fn ready(&self, page: &str) {
        let selector = format!("body[data-page=\"{page}\"][data-ready=\"true\"]");
        self.wait_css(&selector).await;
    }

    async fn wait_css(&self, selector: &str) -> fantoccini::elements::Element {
        let started = Instant::now();
        loop {
            if let Ok(found) = self.client.find(Locator::Css(selector)).await {
                return found;
            }
            if started.elapsed() > PATIENCE {
                let page = self.client.source().await.unwrap_or_default();
                panic!("nothing matched {selector} within {PATIENCE:?}; the page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `data-test=test`, waiting for it to appear.
    async fn find(&self, test: &str) -> fantoccini::elements::Element {
        self.wait_css(&Self::css(test)).await
    }

    async fn click(&self, selector: &str) {
        self.wait_css(selector).await.click().await.expect("click");
    }

    async fn fill(&self, test: &str, text: &str) {
        let field = self.find(test).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn text(&self, test: &str) -> String {
        self.find(test).await.text().await.expect("text")
    }

    /// Waits for the flash message of `kind` and returns it.
    async fn flash(&self, kind: &str) -> String {
        let selector = format!("[data-test=\"flash\"][data-kind=\"{kind}\"]");
        let found = self.wait_css(&selector).await;
        found.text().await.expect("text")
    }

    /// Reloads `page` until `selector` shows (what it waits for arrives with the live feed or
    /// on the next load, whichever comes first).
    async fn reload_until(&self, page: &str, selector: &str) -> fantoccini::elements::Element {
        let started = Instant::now();
        loop {
            if let Ok(found) = self.client.find(Locator::Css(selector)).await {
                return found;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{selector} never showed on {page}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.client.refresh().await.expect("reload");
            self.ready(page).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save screenshot");
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// The API with the console's key.
fn with_key(hub: &TestHub) -> Api {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {KEY}").parse().expect("header value");
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    Api {
        base: hub.base.clone(),
        http: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client"),
    }
}

/// The subscription id a subscription page's address ends with.
async fn shown_subscription(browser: &Browser) -> String {
    let url = browser.client.current_url().await.expect("url");
    let fragment = url.fragment().unwrap_or_default();
    let id = fragment.rsplit('/').next().unwrap_or_default();
    assert_eq!(id.len(), 36, "a subscription page: {url}");
    id.to_owned()
}

async fn an_operator_works_through_the_console_in_a_real_browser(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start(backend).await else {
        return;
    };
    let keys = format!("{KEY},read:{READ_KEY}");
    let vars = fast(&[("IH_API_KEYS", &keys), ("IH_DELIVERY_MAX_ATTEMPTS", "1")]);
    let Some(hub) = TestHub::start_with(backend, &vars).await else {
        browser.close().await;
        return;
    };
    let api = with_key(&hub);
    let console = hub.url("/console");

    // Keys are set: the console asks for one, refuses a wrong one, keeps the right one out of
    // the address.
    browser.open(&console, "login").await;
    browser.shot("login").await;
    browser.fill("login-key", "not-the-key-0123456789").await;
    browser.click(&Browser::css("login-submit")).await;
    browser.find("login-error").await;
    browser.fill("login-key", KEY).await;
    browser.click(&Browser::css("login-submit")).await;
    browser.ready("overview").await;
    let url = browser.client.current_url().await.expect("url");
    assert!(!url.as_str().contains(KEY), "the key is never in a URL");

    // Create a subscription: the API's field errors show beside the fields, then it is created.
    let ok = Receiver::start(Reply::Status(200)).await;
    browser
        .open(&format!("{console}#/subscriptions/new"), "subscription-new")
        .await;
    browser.fill("field-url", "not a url").await;
    browser.fill("field-secret", "short").await;
    browser.fill("field-events", "order.created").await;
    browser.click(&Browser::css("subscription-submit")).await;
    let url_error = browser.text("error-url").await;
    let secret_error = browser.text("error-secret").await;
    assert!(!url_error.is_empty() && !secret_error.is_empty());
    browser.shot("subscription-form-errors").await;
    let secret = "console-secret-0123456789";
    browser.fill("field-url", &ok.url("/hook")).await;
    browser.fill("field-secret", secret).await;
    browser.click(&Browser::css("subscription-submit")).await;
    browser.ready("subscription").await;
    let sub = shown_subscription(&browser).await;
    let stored = api
        .get_json(&format!("/api/v1/subscriptions/{sub}"), 200)
        .await;
    assert_eq!(stored["events"], json!(["order.created"]));

    // Publish through the API; find the event and its delivered attempt.
    let event = api.publish_id("order.created", json!({"order": 42})).await;
    api.wait_delivered(&event).await;
    browser.open(&format!("{console}#/events"), "events").await;
    let row = format!("[data-test=\"event-row\"][data-id=\"{event}\"]");
    browser.reload_until("events", &row).await;
    browser.shot("events").await;
    browser
        .click(&format!("{row} [data-test=\"event-link\"]"))
        .await;
    browser.ready("event").await;
    let payload = browser.text("event-payload").await;
    assert!(payload.contains("42"), "{payload}");
    browser
        .reload_until(
            "event",
            "[data-test=\"attempt-row\"][data-status=\"succeeded\"]",
        )
        .await;
    browser.shot("event").await;

    // Send a test event from the subscription page and see its result.
    let page = format!("{console}#/subscriptions/{sub}");
    browser.open(&page, "subscription").await;
    browser.click(&Browser::css("send-test")).await;
    browser
        .wait_css("[data-test=\"test-result\"][data-succeeded=\"true\"]")
        .await;
    browser.shot("subscription").await;

    // Rotate the secret: the next delivery is signed with the new one (and, through the grace
    // period, the seed header still with the old one).
    let rotated = "console-rotated-secret-0123456789";
    browser.fill("rotate-secret", rotated).await;
    browser.click(&Browser::css("rotate-submit")).await;
    browser.flash("success").await;
    let before = ok.requests_to("/hook").len();
    let next = api.publish_id("order.created", json!({})).await;
    api.wait_delivered(&next).await;
    let requests = ok.wait_for("/hook", before + 1, PATIENCE).await;
    let last = requests.last().expect("a delivery");
    assert!(
        verify_standard_signature(rotated, last),
        "signed with the new secret"
    );
    assert!(
        verify_seed_signature(secret, last),
        "the seed header keeps the old secret during the grace period"
    );

    // Edit: a change is saved; a bad filter's API error shows beside the filter, naming where.
    browser.open(&page, "subscription").await;
    browser.fill("edit-description", "Orders for finance").await;
    browser.click(&Browser::css("edit-submit")).await;
    browser.flash("success").await;
    let stored = api
        .get_json(&format!("/api/v1/subscriptions/{sub}"), 200)
        .await;
    assert_eq!(stored["description"], "Orders for finance");
    browser.ready("subscription").await;
    browser
        .fill("edit-filter", r#"{"payload.total": {"$between": [1, 2]}}"#)
        .await;
    browser.click(&Browser::css("edit-submit")).await;
    let error = browser
        .wait_css("[data-test=\"edit-form\"] [data-test=\"error-filter\"]")
        .await
        .text()
        .await
        .expect("text");
    assert!(error.contains("$between"), "{error}");
    browser.shot("subscription-edit-errors").await;

    // Pause and resume.
    browser.open(&page, "subscription").await;
    browser.click(&Browser::css("pause-toggle")).await;
    browser.flash("success").await;
    let stored = api
        .get_json(&format!("/api/v1/subscriptions/{sub}"), 200)
        .await;
    assert_eq!(stored["paused"], true);
    browser
        .wait_css("[data-test=\"pause-toggle\"][data-paused=\"true\"]")
        .await;
    browser.click(&Browser::css("pause-toggle")).await;
    browser
        .wait_css("[data-test=\"pause-toggle\"][data-paused=\"false\"]")
        .await;
    let stored = api
        .get_json(&format!("/api/v1/subscriptions/{sub}"), 200)
        .await;
    assert_eq!(stored["paused"], false);

    // A failing endpoint: its delivery is dead-lettered; replayed from the console, delivered.
    let failing = Receiver::start(Reply::Status(500)).await;
    let down = api
        .post_json(
            "/api/v1/subscriptions",
            &json!({"url": failing.url("/down"), "secret": secret, "events": ["user.created"]}),
            201,
        )
        .await;
    let dead = api.publish_id("user.created", json!({"user": 7})).await;
    api.wait_status(&dead, "dead").await;
    browser
        .open(&format!("{console}#/dead-letters"), "dead-letters")
        .await;
    let letters = api.get_json("/api/v1/admin/dead-letters", 200).await;
    let letter = letters["data"][0]["id"].as_str().expect("a dead letter");
    browser
        .reload_until(
            "dead-letters",
            &format!("[data-test=\"dead-letter-row\"][data-id=\"{letter}\"]"),
        )
        .await;
    browser.shot("dead-letters").await;
    failing.set_default(Reply::Status(200));
    browser
        .click(&format!(
            "[data-test=\"dead-letter-select\"][data-id=\"{letter}\"]"
        ))
        .await;
    browser.click(&Browser::css("replay-selected")).await;
    browser.flash("success").await;
    api.wait_delivered(&dead).await;

    // The subscriptions list shows both with their health.
    browser
        .open(&format!("{console}#/subscriptions"), "subscriptions")
        .await;
    for id in [sub.as_str(), down["id"].as_str().expect("id")] {
        browser
            .wait_css(&format!(
                "[data-test=\"subscription-row\"][data-id=\"{id}\"]"
            ))
            .await;
    }
    browser.shot("subscriptions").await;

    // A failed connector: its problem in words, not a dump.
    std::fs::write(hub.connectors_dir.join("broken.wasm"), b"not a component")
        .expect("write garbage");
    let started = Instant::now();
    while !api.get_json("/api/v1/connectors", 200).await["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|c| c["name"] == "broken")
    {
        assert!(
            started.elapsed() < PATIENCE,
            "the hub never saw broken.wasm"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .open(&format!("{console}#/connectors"), "connectors")
        .await;
    let card = "[data-test=\"connector\"][data-name=\"broken\"]";
    browser.reload_until("connectors", card).await;
    let problem = browser
        .wait_css(&format!("{card} [data-test=\"connector-problem\"]"))
        .await
        .text()
        .await
        .expect("text");
    assert!(
        problem.len() > 10 && !problem.trim_start().starts_with('{'),
        "a sentence: {problem}"
    );
    browser.shot("connectors").await;

    // Delete with confirmation.
    browser.open(&page, "subscription").await;
    browser.click(&Browser::css("delete-subscription")).await;
    browser.find("confirm-dialog").await;
    browser.click(&Browser::css("confirm-delete")).await;
    browser.ready("subscriptions").await;
    api.expect(api.get(&format!("/api/v1/subscriptions/{sub}")), 404)
        .await;

    // Without a secret the hub generates one, shown once in the flash.
    browser
        .open(&format!("{console}#/subscriptions/new"), "subscription-new")
        .await;
    browser.fill("field-url", &ok.url("/generated")).await;
    browser.fill("field-events", "order.created").await;
    browser.click(&Browser::css("subscription-submit")).await;
    browser.ready("subscription").await;
    let generated = browser.text("created-secret").await;
    assert!(generated.starts_with("whsec_"), "{generated}");

    // A transform on it: shown, and tried on an event from its page (nothing sent).
    integrations_hub_testkit::deploy(
        &hub.connectors_dir,
        "cloudevents.wasm",
        &integrations_hub_testkit::built_wasm("cloudevents_transform"),
    );
    let transformed = shown_subscription(&browser).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while api.get_json("/api/v1/transforms", 200).await["data"][0]["status"] != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "the transform never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api.patch_json(
        &format!("/api/v1/subscriptions/{transformed}"),
        &json!({"transform": {"name": "cloudevents", "settings": {"source": "/console"}}}),
        200,
    )
    .await;
    browser.client.refresh().await.expect("reload");
    browser.ready("subscription").await;
    browser
        .wait_css("[data-test=\"sub-transform\"][data-transform=\"cloudevents\"]")
        .await;
    browser.click(&Browser::css("transform-try")).await;
    browser
        .wait_css("[data-test=\"transform-result\"][data-outcome=\"deliver\"]")
        .await;
    let body = browser.text("transform-body").await;
    assert!(
        body.contains("\"specversion\": \"1.0\"") && body.contains("/console"),
        "{body}"
    );
    browser.shot("transform-dry-run").await;
    assert!(
        ok.requests_to("/generated").is_empty(),
        "a dry run sends nothing"
    );

    // A read key: what it may read, and no control that changes anything.
    browser.use_key(READ_KEY).await;
    browser.client.refresh().await.expect("reload");
    browser.ready("subscription").await;
    browser.wait_css("body[data-scope=\"read\"]").await;
    for control in [
        "send-test",
        "rotate-form",
        "delete-subscription",
        "pause-toggle",
        "edit-form",
        "transform-card",
    ] {
        let shown = browser
            .find(control)
            .await
            .is_displayed()
            .await
            .expect("displayed");
        assert!(!shown, "{control} is hidden from a read key");
    }
    browser
        .open(&format!("{console}#/subscriptions"), "subscriptions")
        .await;
    let new = browser.find("new-subscription").await;
    assert!(!new.is_displayed().await.expect("displayed"));
    browser.shot("read-key").await;
    browser.use_key(KEY).await;

    // The overview, on a laptop and on a narrow screen; the keyboard reaches the skip link first.
    browser
        .open(&format!("{console}#/overview"), "overview")
        .await;
    let attempts = browser.find("overview-attempts").await;
    let value = attempts.attr("data-value").await.expect("attr");
    assert!(
        value.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 3)),
        "attempts over the last hour"
    );
    browser.shot("overview").await;
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("resize");
    browser.client.refresh().await.expect("reload");
    browser.ready("overview").await;
    browser.shot("overview-narrow").await;
    let body = browser
        .client
        .find(Locator::Css("body"))
        .await
        .expect("body");
    body.send_keys("\u{E004}").await.expect("tab");
    let focused = browser.client.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("data-test").await.expect("attr").as_deref(),
        Some("skip-link")
    );

    // Sign out: the key is forgotten.
    browser
        .client
        .set_window_size(1280, 900)
        .await
        .expect("resize");
    browser.click(&Browser::css("sign-out")).await;
    browser.ready("login").await;
    browser.close().await;
}
